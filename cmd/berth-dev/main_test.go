package main

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"berth.dev/berth/test/toolbin"
)

// The dev command's whole life cycle against real components, run as a user has it (built, copied elsewhere, the
// pinned binaries found in its tool cache): up (detached), status, join-info in every format, a second up that
// restarts with the same join material, down, and nothing left running.
func TestControlPlaneUpStatusJoinInfoDown(t *testing.T) {
	k8s := toolbin.Kubernetes.ForTest(t)
	// A fixed directory: processes that a killed run of this test left (they are detached) are stopped by the
	// first `down` of the next run.
	base := filepath.Join(os.TempDir(), "berth-dev-cli-test")
	dir := filepath.Join(base, "controlplane")
	log := slog.New(slog.DiscardHandler)
	dev := newDevTool(t, map[string]string{"k8s": k8s}, "BERTH_DEV_DIR="+base)
	bin := dev.k8sBin
	do := func(args ...string) (string, error) { return dev.run(t, args...) }
	if _, err := do("controlplane", "down"); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(base)
	t.Cleanup(func() {
		do("controlplane", "down")
		os.RemoveAll(base)
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	out, err := do("controlplane", "up", "--port", port)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	for _, want := range []string{"endpoint:    https://127.0.0.1:" + port, "token:", "ca-cert-pin: sha256:", filepath.Join(bin, "kubectl")} {
		if !strings.Contains(out, want) {
			t.Errorf("up output lacks %q:\n%s", want, out)
		}
	}
	if out, err := do("controlplane", "status"); err != nil || !strings.Contains(out, "readyz ok") {
		t.Errorf("status = %q, %v; want readyz ok", out, err)
	}

	out, err = do("controlplane", "join-info", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ji struct{ Endpoint, Token, CACertPin string }
	if err := json.Unmarshal([]byte(out), &ji); err != nil {
		t.Fatalf("join-info -o json: %v\n%s", err, out)
	}
	if _, err := bootstraptoken.Parse(ji.Token); err != nil {
		t.Errorf("join-info token: %v", err)
	}
	if _, err := capin.Parse(ji.CACertPin); err != nil {
		t.Errorf("join-info pin: %v", err)
	}
	out, _ = do("controlplane", "join-info", "-o", "kubeadm")
	if want := "kubeadm join 127.0.0.1:" + port + " --token " + ji.Token + " --discovery-token-ca-cert-hash " + ji.CACertPin; strings.TrimSpace(out) != want {
		t.Errorf("join-info -o kubeadm = %q, want %q", out, want)
	}

	// up again: restarts in place (no "port in use" from its own earlier processes), same CA and token.
	if _, err := do("controlplane", "up", "--port", port, "--k8s-bin", k8s); err != nil {
		t.Fatalf("second up: %v", err)
	}
	out, _ = do("controlplane", "join-info", "-o", "json")
	var again struct{ Token, CACertPin string }
	json.Unmarshal([]byte(out), &again)
	if again.Token != ji.Token || again.CACertPin != ji.CACertPin {
		t.Error("second up changed the join material")
	}

	out, err = do("controlplane", "down")
	if err != nil || !strings.Contains(out, "stopped 4 ") {
		t.Errorf("down = %q, %v; want 4 processes stopped", out, err)
	}
	recs, _, _ := proc.DefaultRegistry(log).Records()
	for _, r := range recs {
		if r.Group == dir {
			t.Errorf("record left after down: %+v (running: %v)", r, r.Running())
		}
	}
	if _, err := do("controlplane", "status"); err == nil {
		t.Error("status succeeded after down")
	}
	if _, err := do("controlplane", "join-info", "-o", "yaml"); err == nil {
		t.Error("join-info -o yaml succeeded, want an error naming the formats")
	}
}
