package toolcache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFindPicksNewestCompleteBuildOfTheVersion(t *testing.T) {
	cache := t.TempDir()
	mk := func(name string, complete bool, age time.Duration) string {
		d := filepath.Join(cache, "k8s", name)
		if err := os.MkdirAll(filepath.Join(d, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if complete {
			c := filepath.Join(d, ".complete")
			if err := os.WriteFile(c, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			when := time.Now().Add(-age)
			if err := os.Chtimes(c, when, when); err != nil {
				t.Fatal(err)
			}
		}
		return filepath.Join(d, "bin")
	}
	if _, err := Find(cache, "k8s", "1.37.2"); err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("empty cache: %v, want an error that says how to build", err)
	}
	mk("v1.37.2-aaaaaaaaaaaa", true, time.Hour)
	want := mk("v1.37.2-bbbbbbbbbbbb", true, time.Minute)
	mk("v1.37.2-cccccccccccc", false, 0) // a killed build
	mk("v1.38.0-dddddddddddd", true, 0)  // another version
	mk(".build-v1.37.2.XYZ", true, 0)    // a build in progress
	got, err := Find(cache, "k8s", "1.37.2")
	if err != nil || got != want {
		t.Fatalf("Find = %q, %v; want %q", got, err, want)
	}
}

// The pinned versions here are the ones tools/<tool>/go.mod require, so berth-dev looks for what make tools built.
func TestVersionsMatchTheToolModules(t *testing.T) {
	for tool, v := range map[string]string{"k8s": KubernetesVersion, "coredns": CoreDNSVersion, "victorialogs": VictoriaLogsVersion} {
		data, err := os.ReadFile(filepath.Join("..", "..", "..", "tools", tool, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		mod := map[string]string{"k8s": "k8s.io/kubernetes", "coredns": "github.com/coredns/coredns", "victorialogs": "github.com/VictoriaMetrics/VictoriaLogs"}[tool]
		if !strings.Contains(string(data), mod+" v"+v+"\n") {
			t.Errorf("tools/%s/go.mod does not require %s v%s", tool, mod, v)
		}
	}
}
