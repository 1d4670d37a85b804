package bootcheck

import (
	"strings"
	"testing"
)

// A console as a guest writes it: the check lines of this run (and of an older run, with another nonce), with the
// serial line's carriage returns.
const console = "[  OK  ] Started berth-bootcheck.service.\r\n" +
	"BERTH-CHECK n1 ok systemd-running\r\n" +
	"BERTH-CHECK n0 fail systemd-running degraded\r\n" +
	"BERTH-CHECK n1 ok kubelet-version Kubernetes v1.37.2\r\n" +
	"BERTH-CHECK n1 ok kube-proxy-version Kubernetes v1.37.2\r\n" +
	"BERTH-CHECK n1 fail image:x exit status 1 \r\n" +
	"BERTH-CHECK-DONE n1\r\n"

func TestJudgeVersionsOnTheHost(t *testing.T) {
	r := Result{reports: parse(console, "n1")}
	byName := func(cs []Check) map[string]Check {
		m := map[string]Check{}
		for _, c := range cs {
			m[c.Name] = c
		}
		return m
	}
	got := byName(r.Judge(Expect{KubernetesVersion: "v1.37.2", Images: []string{"x"}}))
	for _, n := range []string{"systemd-running", "kubelet-version", "kube-proxy-version"} {
		if !got[n].OK {
			t.Errorf("%s: %+v, want ok (this run's line, not the older run's)", n, got[n])
		}
	}
	if c := got["image:x"]; c.OK || c.Detail != "exit status 1" {
		t.Errorf("image:x = %+v, want the guest's failure", c)
	}
	if c := got["containerd-active"]; c.OK || c.Detail != "did not report" {
		t.Errorf("containerd-active = %+v, want failed: did not report", c)
	}

	wrong := byName(r.Judge(Expect{KubernetesVersion: "v1.99.0"}))
	for _, n := range []string{"kubelet-version", "kube-proxy-version"} {
		if c := wrong[n]; c.OK || !strings.Contains(c.Detail, `says "Kubernetes v1.37.2", want "Kubernetes v1.99.0"`) {
			t.Errorf("%s against v1.99.0 = %+v, want failed naming both versions", n, c)
		}
	}
	if _, ok := wrong["image:x"]; ok {
		t.Error("a check the expectation does not list was judged")
	}
	// Failed checks come first.
	all := r.Judge(Expect{KubernetesVersion: "v1.99.0"})
	if all[0].OK || all[len(all)-1].OK != true {
		t.Errorf("order: %+v", all)
	}
}

// The script reports the versions as the binaries print them; it does not judge them.
func TestScriptReportsVersions(t *testing.T) {
	s := script(Expect{KubernetesVersion: "v1.37.2", SandboxImage: "pause"}, "n1")
	if strings.Contains(s, "v1.37.2") {
		t.Errorf("the guest script holds the expected version; it must only report:\n%s", s)
	}
	if !strings.Contains(s, "v kubelet-version /usr/local/bin/kubelet --version") {
		t.Errorf("the script does not report kubelet's version:\n%s", s)
	}
}
