package toolbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Agent builds berth-agent from this tree into the test's temp dir and returns its path. It is static
// (CGO_ENABLED=0), as images ship it, so the same binary runs on every profile's libc. Go's build cache makes
// repeated builds a relink.
func Agent(tb testing.TB) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "berth-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "berth.dev/berth/agent/cmd/berth-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build berth-agent: %v\n%s", err, b)
	}
	return out
}
