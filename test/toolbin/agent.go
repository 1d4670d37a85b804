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
	return buildStatic(tb, "berth-agent", "berth.dev/berth/agent/cmd/berth-agent")
}

// Logs builds berth-logs, the log shipper its image holds, as Agent does berth-agent.
func Logs(tb testing.TB) string {
	tb.Helper()
	return buildStatic(tb, "berth-logs", "berth.dev/berth/agent/cmd/berth-logs")
}

func buildStatic(tb testing.TB, name, pkg string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", name, err, b)
	}
	return out
}
