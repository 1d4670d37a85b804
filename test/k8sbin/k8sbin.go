// Package k8sbin finds the pinned Kubernetes and etcd binaries that tools/k8s/build.sh builds and caches. It runs
// that script (which returns at once when the cache is complete, and builds under a lock otherwise), so tests on a
// fresh machine need no manual step. The binaries are a real prerequisite: when they cannot be had, tests fail.
package k8sbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var once struct {
	sync.Once
	dir string
	err error
}

// Dir returns the directory of the binaries: $BERTH_K8S_BIN if set, else what tools/k8s/build.sh prints.
func Dir() (string, error) {
	once.Do(func() {
		if d := os.Getenv("BERTH_K8S_BIN"); d != "" {
			once.dir = d
			return
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "tools", "k8s", "build.sh")
		cmd := exec.Command("bash", script)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			once.err = fmt.Errorf("%s: %w", script, err)
			return
		}
		once.dir = strings.TrimSpace(string(out))
	})
	return once.dir, once.err
}

// ForTest returns Dir or fails the test.
func ForTest(t testing.TB) string {
	t.Helper()
	d, err := Dir()
	if err != nil {
		t.Fatalf("Kubernetes binaries: %v", err)
	}
	return d
}
