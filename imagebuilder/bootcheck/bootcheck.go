// Package bootcheck proves a baked image works by booting it: qemu (TCG) with a NoCloud seed whose user data
// installs a one-shot check unit. After boot has finished, the unit checks systemd, cloud-init, containerd running
// a container from a pre-cached image with runc, the pinned kubelet and kube-proxy, berth's units, sysctls and
// modules, and the agent enabled and waiting for a NodeConfig (its sd_notify READY and STATUS). It prints one line
// per check on the serial console and powers off. Any failed or missing check fails. The versions are judged here,
// not in the guest: the guest reports what the binaries say, so a result can be judged again against another
// expectation (Result.Judge) without another boot.
// The unit is Type=simple: a oneshot's start job would stay queued while its first check waits for boot to finish.
package bootcheck

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"berth.dev/berth/imagebuilder/qemu"
)

// Expect is what the image must show.
type Expect struct {
	KubernetesVersion string   // kubelet and kube-proxy --version, e.g. v1.37.2
	SandboxImage      string   // an image that stays running (the pause image)
	Images            []string // image names that must be in containerd's k8s.io namespace
	Units             []string // unit files that must be installed
	// Packages are the berth packages dpkg must list as installed, by name, with their versions.
	Packages map[string]string
}

// Check is one result.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// Result is all checks, and the serial log to read when one failed.
type Result struct {
	Checks []Check
	Serial string
	Took   time.Duration
	// reports are the guest's lines, by check name, before judging.
	reports map[string]Check
}

// Judge judges what the guest reported against e: the versions against e's, and every check e lists that the
// guest did not report fails. Checks whose names carry the expectation (images, units, packages) were run in the
// guest against the expectation the image booted with.
func (r Result) Judge(e Expect) []Check {
	var out []Check
	for _, n := range checkNames(e) {
		c, ok := r.reports[n]
		switch {
		case !ok:
			c = Check{Name: n, Detail: "did not report"}
		case c.OK && (n == "kubelet-version" || n == "kube-proxy-version"):
			if want := "Kubernetes " + e.KubernetesVersion; c.Detail != want {
				c = Check{Name: n, Detail: fmt.Sprintf("says %q, want %q", c.Detail, want)}
			}
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return !out[i].OK && out[j].OK })
	return out
}

// Failed lists the failed checks.
func (r Result) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// checkNames are the checks the script runs, in order; a result without one of them fails.
func checkNames(e Expect) []string {
	names := []string{"systemd-running", "cloud-init-done", "cloud-init-user-data", "containerd-active",
		"container-runs", "kubelet-version", "kube-proxy-version", "ip-forward", "br-netfilter", "agent-waiting"}
	for _, img := range e.Images {
		names = append(names, "image:"+img)
	}
	for _, u := range e.Units {
		names = append(names, "unit:"+u)
	}
	for _, p := range sortedKeys(e.Packages) {
		names = append(names, "package:"+p)
	}
	return names
}

// script is the check unit's program. Each check prints "BERTH-CHECK <nonce> ok|fail <name> <detail>"; a
// version check's detail is the first line the binary printed.
func script(e Expect, nonce string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
out=/dev/ttyS0
c() { name=$1; shift; if r=$("$@" 2>&1); then echo "BERTH-CHECK %[1]s ok $name" >$out; else echo "BERTH-CHECK %[1]s fail $name $(echo "$r" | tail -n 3 | tr '\n' ' ')" >$out; fi; }
v() { name=$1; shift; if r=$("$@" 2>&1); then echo "BERTH-CHECK %[1]s ok $name $(echo "$r" | head -n 1)" >$out; else echo "BERTH-CHECK %[1]s fail $name $(echo "$r" | tail -n 3 | tr '\n' ' ')" >$out; fi; }
c systemd-running sh -c 's=$(systemctl is-system-running --wait); echo $s; [ "$s" = running ] || { systemctl --failed --no-legend; false; }'
c cloud-init-done sh -c 'cloud-init status --wait | grep -q "status: done"'
c cloud-init-user-data grep -qx %[1]s /run/berth-bootcheck/nonce
c containerd-active systemctl is-active containerd
c container-runs sh -c 'ctr -n k8s.io run -d --runtime io.containerd.runc.v2 %[2]s berth-bootcheck && sleep 2 && ctr -n k8s.io task ls | grep -E "^berth-bootcheck +[0-9]+ +RUNNING" && ctr -n k8s.io task kill -s KILL berth-bootcheck && sleep 1 && ctr -n k8s.io task rm -f berth-bootcheck && ctr -n k8s.io container rm berth-bootcheck'
v kubelet-version /usr/local/bin/kubelet --version
v kube-proxy-version /usr/local/bin/kube-proxy --version
c ip-forward sh -c '[ "$(sysctl -n net.ipv4.ip_forward)" = 1 ]'
c br-netfilter sh -c 'grep -q "^br_netfilter " /proc/modules'
c agent-waiting sh -c 'systemctl is-enabled berth-agent && systemctl is-active berth-agent && systemctl show -p StatusText berth-agent | grep "^StatusText=waiting for a NodeConfig"'
`, nonce, e.SandboxImage)
	for _, img := range e.Images {
		fmt.Fprintf(&b, "c image:%s sh -c 'ctr -n k8s.io images ls -q | grep -qx %s'\n", img, img)
	}
	for _, u := range e.Units {
		fmt.Fprintf(&b, "c unit:%s systemctl cat %s\n", u, u)
	}
	for _, p := range sortedKeys(e.Packages) {
		fmt.Fprintf(&b, "c package:%s sh -c 'dpkg-query -W -f=\"\\${Status} \\${Version}\" %s | grep -qx \"install ok installed %s\"'\n", p, p, e.Packages[p])
	}
	fmt.Fprintf(&b, "echo \"BERTH-CHECK-DONE %s\" >$out\nsystemctl --no-block poweroff\n", nonce)
	return b.String()
}

// UserData is the seed's user data: the check program, its unit, and a marker file that proves user data ran.
func UserData(e Expect, nonce string) string {
	indent := func(s string) string {
		return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ") + "\n"
	}
	return "#cloud-config\nlocale: C.UTF-8\nwrite_files:\n" +
		"  - path: /run/berth-bootcheck/nonce\n    content: " + nonce + "\n" +
		"  - path: /usr/local/sbin/berth-bootcheck\n    permissions: '0755'\n    content: |\n" + indent(script(e, nonce)) +
		"  - path: /etc/systemd/system/berth-bootcheck.service\n    content: |\n" + indent(`[Unit]
Description=berth boot check (image validation; runs once boot has finished)
After=multi-user.target cloud-final.service
[Service]
Type=simple
ExecStart=/usr/local/sbin/berth-bootcheck`) +
		"runcmd:\n  - [systemctl, daemon-reload]\n  - [systemctl, start, --no-block, berth-bootcheck.service]\n"
}

// Run boots image (format raw, qcow2 or vpc) in dir and collects the checks, within timeout.
func Run(ctx context.Context, image, format, dir string, e Expect, timeout time.Duration) (Result, error) {
	nb := make([]byte, 8)
	rand.Read(nb)
	nonce := hex.EncodeToString(nb)
	t0 := time.Now()
	m, err := qemu.Start(ctx, qemu.Config{Name: "bootcheck", Dir: dir, Image: image, Format: format,
		Seed: qemu.Seed{UserData: UserData(e, nonce)}})
	if err != nil {
		return Result{}, err
	}
	defer m.Stop()
	res := Result{Serial: filepath.Join(dir, "bootcheck.serial.log")}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err = m.WaitFor(ctx, "BERTH-CHECK-DONE "+nonce)
	if err == nil {
		res.Took = time.Since(t0)
	}
	res.reports = parse(m.Tail(1<<20), nonce)
	res.Checks = res.Judge(e)
	return res, err
}

// parse reads the check lines of this run (nonce) from the console, by check name.
func parse(console, nonce string) map[string]Check {
	got := map[string]Check{}
	for _, line := range strings.Split(console, "\n") {
		i := strings.Index(line, "BERTH-CHECK "+nonce+" ")
		if i < 0 {
			continue
		}
		f := strings.SplitN(strings.TrimSpace(line[i+len("BERTH-CHECK "+nonce+" "):]), " ", 3)
		if len(f) < 2 {
			continue
		}
		c := Check{Name: f[1], OK: f[0] == "ok"}
		if len(f) == 3 {
			c.Detail = f[2]
		}
		got[c.Name] = c
	}
	return got
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
