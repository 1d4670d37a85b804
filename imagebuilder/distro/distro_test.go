package distro

import (
	"slices"
	"testing"

	nodedistro "berth.dev/berth/internal/node/distro"
)

// Every run-time profile can be baked and every bake profile has its run-time half, under the same name.
func TestEveryProfileHasBothHalves(t *testing.T) {
	if got, want := Names(), nodedistro.Names(); !slices.Equal(got, want) {
		t.Fatalf("bake profiles %v, run-time profiles %v: want the same names", got, want)
	}
	for _, n := range Names() {
		p, err := Get(n)
		if err != nil {
			t.Fatal(err)
		}
		if p.Name != n || p.Node().Name != n || p.Suite == "" || p.Kernel == "" || len(p.Sources) == 0 {
			t.Errorf("%s: incomplete profile %+v", n, p)
		}
	}
	if _, err := Get("debian-11"); err == nil {
		t.Error("Get(debian-11) succeeded")
	}
}
