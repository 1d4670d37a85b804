package capin

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := "sha256:" + strings.Repeat("Ab", 32)
	p, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if string(p) != strings.ToLower(good) {
		t.Errorf("pin = %s, want lower case", p)
	}
	for _, bad := range []string{"", strings.Repeat("ab", 32), "md5:" + strings.Repeat("ab", 32), "sha256:" + strings.Repeat("ab", 31), "sha256:zz"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}
