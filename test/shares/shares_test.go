// Package shares_test runs berth's share drivers for real: a guest booted from the tests' node image (its
// berth-csi.service serves them), real servers on this host's loopback (Debian's smbd, nfs-ganesha) reached through
// qemu forwards, and the CSI calls the kubelet makes, made in the guest on the drivers' sockets (test/csicall).
package shares_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/encoding/protojson"

	"berth.dev/berth/imagebuilder/qemu"
	"berth.dev/berth/test/nodeimage"
	"berth.dev/berth/test/shareserver"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/vm"
)

// Where the guest reaches the servers (qemu forwards them to the host's loopback ports).
const (
	smbInGuest = "10.0.2.110"
	nfsInGuest = "10.0.2.111"
)

type guest struct {
	t testing.TB
	g *vm.Guest
}

// bootWith boots a guest from the tests' node image that reaches smb and nfs, with the named test commands
// (test/<name>) in /usr/local/bin, once its berth-csi serves both drivers.
func bootWith(tb testing.TB, smb, nfs *shareserver.Server, commands ...string) *vm.Guest {
	tb.Helper()
	g := vm.Boot(tb, vm.Config{Name: "shares", Image: nodeimage.QCOW2(tb), Format: "qcow2", GuestForwards: []qemu.GuestForward{
		{Guest: smbInGuest + ":445", HostPort: smb.Port}, {Guest: nfsInGuest + ":2049", HostPort: nfs.Port}}})
	for _, name := range commands {
		bin := filepath.Join(tb.TempDir(), name)
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "berth.dev/berth/test/"+name)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			tb.Fatalf("build %s: %v\n%s", name, err, out)
		}
		g.Copy(bin, "/usr/local/bin/"+name, 0o755)
	}
	if out, err := g.Try("systemctl is-active berth-csi; ls /var/lib/kubelet/plugins_registry/"); err != nil || !strings.Contains(out, "smb.shares.berth.dev-reg.sock") {
		tb.Fatalf("berth-csi in the guest: %v\n%s", err, out)
	}
	return g
}

// call makes one CSI call in the guest with the request (protojson) on stdin.
func (g guest) call(driver, method, request string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	return g.g.SSH().Run(ctx, "csicall -socket /var/lib/kubelet/plugins/"+driver+"/csi.sock "+method, strings.NewReader(request))
}

func (g guest) must(driver, method, request string) {
	g.t.Helper()
	if out, err := g.call(driver, method, request); err != nil {
		g.t.Fatalf("%s %s: %v\n%s\nberth-csi:\n%s", driver, method, err, out, g.g.Run("journalctl -u berth-csi --no-pager | tail -n 20"))
	}
}

func stage(id, source, subDir, secret string, flags ...string) string {
	var f []string
	for _, x := range flags {
		f = append(f, fmt.Sprintf("%q", x))
	}
	return fmt.Sprintf(`{"volumeId": %q, "stagingTargetPath": "/var/lib/kubelet/plugins/kubernetes.io/csi/x/%s/globalmount",
	  "volumeCapability": {"mount": {"volumeMountGroup": "2000", "mountFlags": [%s]}, "accessMode": {"mode": "MULTI_NODE_MULTI_WRITER"}},
	  "volumeContext": {"source": %q, "subDir": %q}%s}`, id, id, strings.Join(f, ","), source, subDir, secret)
}

// target is where pod publishes volume id.
func target(pod, id string) string {
	return "/var/lib/kubelet/pods/" + pod + "/volumes/kubernetes.io~csi/" + id + "/mount"
}

func publish(pod, id string, ro bool) string {
	return fmt.Sprintf(`{"volumeId": %q, "stagingTargetPath": "/var/lib/kubelet/plugins/kubernetes.io/csi/x/%s/globalmount",
	  "targetPath": %q, "readonly": %v,
	  "volumeCapability": {"mount": {}, "accessMode": {"mode": "MULTI_NODE_MULTI_WRITER"}}}`, id, id, target(pod, id), ro)
}

func unpublish(pod, id string) string {
	return fmt.Sprintf(`{"volumeId": %q, "targetPath": %q}`, id, target(pod, id))
}

func unstage(id string) string {
	return fmt.Sprintf(`{"volumeId": %q, "stagingTargetPath": "/var/lib/kubelet/plugins/kubernetes.io/csi/x/%s/globalmount"}`, id, id)
}

// An SMB share and an NFS export, each mounted by the guest's kernel through the drivers: staged as a systemd
// mount unit with berth's default options and the pod's group, the SMB password in a credentials file that is
// gone after, published into a pod's path where a write lands on the server; a running pod's SMB volume works
// again within 15 s of the server's restart; an NFS export that went stale is found and mounted again by the
// drivers' health loop, for the pods that start after; a wrong password and an unreachable server fail with their
// cause, in time, leaving no mount helper behind; unstaging leaves nothing mounted.
func TestSharesInAGuest(t *testing.T) {
	tier.Require(t, tier.Root, tier.QEMU, tier.Samba, tier.Ganesha)
	const password = "pw-Berth-7x"
	smb, nfs := shareserver.SMB(t, password), shareserver.NFS(t)
	for _, d := range []string{filepath.Join(smb.Dir, "pvc-smb"), filepath.Join(nfs.Dir, "pvc-nfs")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	g := guest{t, bootWith(t, smb, nfs, "csicall")}

	const smbDriver, nfsDriver = "smb.shares.berth.dev", "nfs.shares.berth.dev"
	secret := fmt.Sprintf(`, "secrets": {"username": "root", "password": %q}`, password)
	g.must(smbDriver, "NodeStageVolume", stage("smb-1", "//"+smbInGuest+"/data", "pvc-smb", secret))
	g.must(nfsDriver, "NodeStageVolume", stage("nfs-1", nfsInGuest+":/export", "pvc-nfs", ""))
	mounts := g.g.Run("findmnt -n -r -o FSTYPE,SOURCE,OPTIONS -t cifs,nfs4 | sort")
	t.Logf("share mounts in the guest:\n%s", mounts)
	for _, want := range []string{"cifs //" + smbInGuest + "/data", "vers=3.0", "gid=2000", "cache=strict", "actimeo=30",
		"nfs4 " + nfsInGuest + ":/export", "vers=4.1", "hard", "noresvport"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("the guest's share mounts lack %q", want)
		}
	}
	// What the kernel does not list (nosharesock) is in the options berth passed, which its state records.
	if state := g.g.Run("cat /var/lib/berth/shares/smb/state.json"); !strings.Contains(state, `"nosharesock"`) || strings.Contains(state, password) {
		t.Errorf("the SMB driver's state (the options it mounted with, never the password):\n%s", state)
	}
	if got := strings.TrimSpace(g.g.Run("systemctl list-units --no-legend --type mount --state active 'var-lib-berth-shares-*' | wc -l; ls -A /run/berth/shares | wc -l")); got != "2\n0" {
		t.Errorf("share mount units active, credentials files left: %q, want 2 and 0", got)
	}
	if out := g.g.Run("grep -r -l -F " + password + " /etc /run /var/lib/berth /var/log 2>/dev/null; systemctl show -p Options 'var-lib-berth-shares-*.mount'; journalctl -u berth-csi --no-pager"); strings.Contains(out, password) {
		t.Errorf("the password is on the guest's disk, in a unit or in the log:\n%s", out)
	}

	g.must(smbDriver, "NodePublishVolume", publish("p", "smb-1", false))
	g.must(nfsDriver, "NodePublishVolume", publish("p", "nfs-1", true))
	g.g.Run("echo from-a-pod > /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/smb-1/mount/written")
	if data, err := os.ReadFile(filepath.Join(smb.Dir, "pvc-smb", "written")); err != nil || string(data) != "from-a-pod\n" {
		t.Errorf("the pod's write on the SMB volume, on the server: %q %v", data, err)
	}
	if err := os.WriteFile(filepath.Join(nfs.Dir, "pvc-nfs", "served"), []byte("from-the-server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := g.g.Run("cat /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/nfs-1/mount/served; touch /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/nfs-1/mount/x 2>&1 || true"); !strings.HasPrefix(got, "from-the-server") || !strings.Contains(got, "Read-only") {
		t.Errorf("the read-only NFS volume in the pod: %q", got)
	}

	conformance(t, g, password)
	serverRestart(t, g, smb)
	staleExport(t, g, nfs)
	provision(t, g, smb, nfs, secret)

	// A wrong password: the mount fails with the server's refusal, and no mount.cifs is left.
	start := time.Now()
	out, err := g.call(smbDriver, "NodeStageVolume", stage("smb-bad", "//"+smbInGuest+"/data", "", fmt.Sprintf(`, "secrets": {"username": "root", "password": "wrong"}`)))
	if err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("a wrong password: %v\n%s", err, out)
	}
	t.Logf("wrong password refused in %v", time.Since(start).Round(time.Millisecond))
	// An unreachable server (no forward: nothing answers): it fails within the mount timeout with its cause.
	start = time.Now()
	out, err = g.call(nfsDriver, "NodeStageVolume", stage("nfs-dead", "10.0.2.199:/export", "", "", "timeo=50", "retrans=1"))
	if err == nil {
		t.Errorf("a mount of an unreachable server succeeded:\n%s", out)
	}
	t.Logf("unreachable server failed in %v: %v", time.Since(start).Round(time.Millisecond), err)
	if left := g.g.Run("pgrep -a 'mount\\.(cifs|nfs)' || echo none"); strings.TrimSpace(left) != "none" {
		t.Errorf("mount helpers left: %s", left)
	}

	for _, v := range []struct{ driver, id string }{{smbDriver, "smb-1"}, {nfsDriver, "nfs-1"}} {
		for range 2 {
			g.must(v.driver, "NodeUnpublishVolume", unpublish("p", v.id))
			g.must(v.driver, "NodeUnpublishVolume", unpublish("p2", v.id))
			g.must(v.driver, "NodeUnstageVolume", unstage(v.id))
		}
	}
	if got := strings.TrimSpace(g.g.Run("findmnt -n -t cifs,nfs4 | wc -l; systemctl list-units --all --no-legend 'var-lib-berth-shares-*' | wc -l")); got != "0\n0" {
		t.Errorf("after unstaging: share mounts and units %q, want none", got)
	}
}

// serverRestart: a running pod's SMB volume works again within 15 s of the server's restart, with no call to the
// driver and no restart of the pod. The pod is a process in a mount namespace of its own made after the publish,
// with private propagation, as a container's is: the share it holds is the one the kernel's cifs client reconnects
// (a remount on the node would not reach it).
func serverRestart(t *testing.T, g guest, smb *shareserver.Server) {
	t.Helper()
	pid := podProcess(g)
	vol := target("p", "smb-1")
	if out, err := g.g.Try("nsenter -t " + pid + " -m cat " + vol + "/written"); err != nil || out != "from-a-pod\n" {
		t.Fatalf("the pod's view before the restart: %q %v", out, err)
	}
	smb.Restart()
	out, took, err := writesAgain(g, pid, vol, "after-restart", 500*time.Millisecond)
	t.Logf("the pod wrote through its SMB volume again %v after the server restarted", took.Round(100*time.Millisecond))
	if err != nil || out != "after-restart\n" {
		t.Fatalf("the pod's SMB volume after the server restarted: %q %v\nguest kernel:\n%s", out, err, g.g.Run("dmesg | grep -i cifs | tail -n 20"))
	}
	if took > 15*time.Second {
		t.Errorf("the pod's SMB volume took %v to work again after the server restarted, want at most 15 s", took.Round(100*time.Millisecond))
	}
	if data, err := os.ReadFile(filepath.Join(smb.Dir, "pvc-smb", "after")); err != nil || string(data) != "after-restart\n" {
		t.Errorf("the write after the restart, on the server: %q %v", data, err)
	}
	g.g.Run("kill " + pid)
}

// podProcess starts a process in the guest standing in for a pod: a mount namespace of its own made now, with
// private propagation, as a container's is. It returns its PID.
func podProcess(g guest) string {
	return strings.TrimSpace(g.g.Run("setsid unshare -m --propagation private sleep 3600 </dev/null >/dev/null 2>&1 & echo $!"))
}

// writesAgain asks the pod process pid to write word to a file of its volume vol and read it back, every poll
// (the kernel gives no event for a reconnected share), for up to 90 s; it returns the last answer and how long it
// took from the call.
func writesAgain(g guest, pid, vol, word string, poll time.Duration) (string, time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := g.g.SSH().Wait(ctx, "nsenter -t "+pid+" -m timeout 10 sh -c 'echo "+word+" > "+vol+"/after && cat "+vol+"/after'", poll,
		func(s string) bool { return s == word+"\n" })
	return out, time.Since(start), err
}

// staleExport: an NFS share that stays dead — its export's directory replaced on the server, so every handle the
// client holds is stale — is found by the driver's health loop and mounted again, and a pod started after it gets
// the live export; the metrics count the probes and the remount.
func staleExport(t *testing.T, g guest, nfs *shareserver.Server) {
	t.Helper()
	nfs.RestartWith(func() {
		for _, err := range []error{os.RemoveAll(nfs.Dir), os.MkdirAll(filepath.Join(nfs.Dir, "pvc-nfs"), 0o777),
			os.WriteFile(filepath.Join(nfs.Dir, "pvc-nfs", "fresh"), []byte("after-the-replacement\n"), 0o644)} {
			if err != nil {
				t.Fatal(err)
			}
		}
	})
	replaced := time.Now()
	// The heal's log line, followed as the journal writes it.
	if out, err := g.g.Try("timeout 110 sh -c \"journalctl -u berth-csi -f -n all -o cat | grep -m1 'share remounted. driver=nfs'\""); err != nil {
		t.Fatalf("the stale NFS share was not mounted again in 2 minutes (%v %q); berth-csi:\n%s", err, out, g.g.Run("systemctl status berth-csi --no-pager; journalctl -u berth-csi --no-pager | tail -n 30"))
	}
	t.Logf("stale NFS share mounted again %v after the export was replaced", time.Since(replaced).Round(time.Second))
	g.must("nfs.shares.berth.dev", "NodePublishVolume", publish("p2", "nfs-1", true))
	if got, err := g.g.Try("cat " + target("p2", "nfs-1") + "/fresh"); err != nil || got != "after-the-replacement\n" {
		t.Errorf("a pod started after the heal reads %q, %v; want the replaced export's file", got, err)
	}
	metrics := g.g.Run("exec 3<>/dev/tcp/127.0.0.1/9472; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")
	for _, want := range []string{`berth_shares_remounts_total{driver="nfs.shares.berth.dev",result="ok"} 1`, `berth_shares_mounted{driver="smb.shares.berth.dev"} 1`,
		`berth_shares_probes_total{driver="nfs.shares.berth.dev",result="dead"} `} {
		if !strings.Contains(metrics, want) {
			t.Errorf("the driver's metrics lack %q:\n%s", want, metrics)
		}
	}
}

// provision: the Controller service makes a directory per volume on the share, as the guest's kernel mounts it
// with mount(2) in a namespace of its own (no mount helper): the volume it returns stages and publishes, a pod's
// write lands in that directory on the server; deleting it archives it (SMB, onDelete archive) or removes it
// (NFS, the default).
func provision(t *testing.T, g guest, smb, nfs *shareserver.Server, secret string) {
	t.Helper()
	create := func(driver, name, params, secret string) *csi.Volume {
		t.Helper()
		out, err := g.call(driver, "CreateVolume", fmt.Sprintf(`{"name": %q, "parameters": {%s}, "volumeCapabilities": [{"mount": {}, "accessMode": {"mode": "MULTI_NODE_MULTI_WRITER"}}]%s}`,
			name, params, secret))
		if err != nil {
			t.Fatalf("%s CreateVolume: %v\n%s", driver, err, out)
		}
		var resp csi.CreateVolumeResponse
		if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("%s CreateVolume: %v\n%s", driver, err, out)
		}
		return resp.GetVolume()
	}
	const smbDriver, nfsDriver = "smb.shares.berth.dev", "nfs.shares.berth.dev"
	v := create(smbDriver, "pvc-dyn-1", `"source": "//`+smbInGuest+`/data", "subDir": "dynamic", "onDelete": "archive"`, secret)
	if got := v.GetVolumeContext(); got["source"] != "//"+smbInGuest+"/data" || got["subDir"] != "dynamic/pvc-dyn-1" {
		t.Errorf("the SMB volume's context: %v", got)
	}
	if fi, err := os.Stat(filepath.Join(smb.Dir, "dynamic", "pvc-dyn-1")); err != nil || !fi.IsDir() {
		t.Fatalf("the SMB volume's directory on the server: %v", err)
	}
	g.must(smbDriver, "NodeStageVolume", stage("smb-dyn", v.GetVolumeContext()["source"], v.GetVolumeContext()["subDir"], secret))
	g.must(smbDriver, "NodePublishVolume", publish("p3", "smb-dyn", false))
	g.g.Run("echo provisioned > " + target("p3", "smb-dyn") + "/f")
	if data, err := os.ReadFile(filepath.Join(smb.Dir, "dynamic", "pvc-dyn-1", "f")); err != nil || string(data) != "provisioned\n" {
		t.Errorf("a pod's write on the provisioned SMB volume, on the server: %q %v", data, err)
	}
	g.must(smbDriver, "NodeUnpublishVolume", unpublish("p3", "smb-dyn"))
	g.must(smbDriver, "NodeUnstageVolume", unstage("smb-dyn"))
	g.must(smbDriver, "DeleteVolume", fmt.Sprintf(`{"volumeId": %q%s}`, v.GetVolumeId(), secret))
	if _, err := os.Stat(filepath.Join(smb.Dir, "dynamic", "archived-pvc-dyn-1", "f")); err != nil {
		t.Errorf("the deleted SMB volume is not archived: %v", err)
	}
	if _, err := os.Stat(filepath.Join(smb.Dir, "dynamic", "pvc-dyn-1")); !os.IsNotExist(err) {
		t.Errorf("the deleted SMB volume's directory is still there: %v", err)
	}

	n := create(nfsDriver, "pvc-dyn-2", `"source": "`+nfsInGuest+`:/export"`, "")
	if fi, err := os.Stat(filepath.Join(nfs.Dir, "pvc-dyn-2")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o777 {
		t.Fatalf("the NFS volume's directory on the server: %v %v", fi, err)
	}
	g.must(nfsDriver, "DeleteVolume", fmt.Sprintf(`{"volumeId": %q}`, n.GetVolumeId()))
	if _, err := os.Stat(filepath.Join(nfs.Dir, "pvc-dyn-2")); !os.IsNotExist(err) {
		t.Errorf("the deleted NFS volume's directory is still there: %v", err)
	}
	if out := g.g.Run("grep -c berth-share- /proc/*/mountinfo 2>/dev/null | grep -v ':0$' || echo none"); strings.TrimSpace(out) != "none" {
		t.Errorf("the controller's share mounts are left in some namespace:\n%s", out)
	}
}

// conformance runs csi-sanity (the CSI specification's conformance suite, pinned: tools/csi-sanity) in the guest
// against each driver's socket, as the kubelet and the provisioner reach it: Identity, Controller (volumes made in
// a directory of the share) and Node (stage, publish, unpublish, unstage, every call twice and with bad input);
// once in the suite's order and once shuffled (a fixed seed: a failure can be run again). Each run has directories
// of its own, and after each nothing it staged may be left: no mount under its directories and no volume in the
// driver's state but the test's own (a spec that leaves one behind would otherwise fail every spec after it).
func conformance(t *testing.T, g guest, password string) {
	t.Helper()
	g.g.Copy(filepath.Join(toolbin.CSISanity.ForTest(t), "csi-sanity"), "/usr/local/bin/csi-sanity", 0o755)
	secrets := fmt.Sprintf("username: root\npassword: %q\n", password)
	for _, d := range []struct{ driver, source, secrets string }{
		{"smb.shares.berth.dev", "//" + smbInGuest + "/data", secrets},
		{"nfs.shares.berth.dev", nfsInGuest + ":/export", ""},
	} {
		var sec strings.Builder
		for _, call := range []string{"CreateVolumeSecret", "DeleteVolumeSecret", "NodeStageVolumeSecret", "NodePublishVolumeSecret"} {
			if d.secrets != "" {
				fmt.Fprintf(&sec, "%s:\n%s", call, indent(d.secrets))
			}
		}
		protocol := strings.Split(d.driver, ".")[0]
		for i, order := range []string{"-ginkgo.randomize-all=false", "-ginkgo.randomize-all -ginkgo.seed=4"} {
			dir := fmt.Sprintf("/tmp/sanity-%s-%d", protocol, i)
			g.g.Run("mkdir -p " + dir)
			g.g.Copy(writeTemp(t, "source: "+d.source+"\nsubDir: sanity\n"), dir+"/params.yaml", 0o644)
			g.g.Copy(writeTemp(t, sec.String()), dir+"/secrets.yaml", 0o600)
			since := strings.TrimSpace(g.g.Run("date '+%Y-%m-%d %H:%M:%S'"))
			// A run takes a minute or two; a loaded machine's guest is slower.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			out, err := g.g.SSH().Run(ctx, fmt.Sprintf("cd %[1]s && csi-sanity -csi.endpoint /var/lib/kubelet/plugins/%[2]s/csi.sock"+
				" -csi.testvolumeparameters params.yaml -csi.secrets secrets.yaml -csi.testvolumeaccesstype mount"+
				" -csi.stagingdir %[1]s/staging -csi.mountdir %[1]s/mount -ginkgo.no-color"+
				// A volume is a directory: its size is not enforced or recorded, so a second CreateVolume of the same
				// name with another size cannot be told apart (csi-driver-nfs and -smb skip this one too).
				" -ginkgo.skip 'already existing name and different capacity' %[3]s 2>&1", dir, d.driver, order), nil)
			cancel()
			if err != nil || !strings.Contains(out, "SUCCESS!") {
				t.Errorf("csi-sanity against %s (%s): %v\n%s\n%s\nthe driver's warnings and errors meanwhile (bad-input refusals left out):\n%s",
					d.driver, order, err, sanityFailures(out, 3), lastLines(out, 4),
					g.g.Run(fmt.Sprintf("journalctl -u berth-csi --no-pager -o cat --since %q | grep -E 'level=(WARN|ERROR)' | grep -v -E 'code=(InvalidArgument|NotFound|AlreadyExists)' | tail -n 30", since)))
			} else {
				t.Logf("csi-sanity against %s (%s):\n%s", d.driver, order, lastLines(out, 4))
			}
			if left := g.g.Run(fmt.Sprintf("findmnt -r -n -o TARGET | grep '^%s/' || true", dir)); left != "" {
				t.Errorf("csi-sanity against %s (%s) left mounts behind:\n%s", d.driver, order, left)
				g.g.Run(fmt.Sprintf("findmnt -r -n -o TARGET | grep '^%s/' | sort -r | xargs -r -n1 umount -l", dir))
			}
			state := g.g.Run("cat /var/lib/berth/shares/" + protocol + "/state.json")
			if vols := staged(t, state); !slices.Equal(vols, []string{protocol + "-1"}) {
				t.Errorf("csi-sanity against %s (%s): staged volumes after it %q, want only the test's own %s-1", d.driver, order, vols, protocol)
			}
		}
	}
}

// staged are the volume IDs of a driver's state.json.
func staged(t *testing.T, state string) []string {
	t.Helper()
	var st struct{ Volumes map[string]json.RawMessage }
	if err := json.Unmarshal([]byte(state), &st); err != nil {
		t.Fatalf("the driver's state: %v\n%s", err, state)
	}
	return slices.Sorted(maps.Keys(st.Volumes))
}

// sanityFailures are csi-sanity's (ginkgo's) first n failed specs in out, each with its messages but without its
// steps, and how many more failed: short enough for a CI log that keeps only the start and end of a long output.
func sanityFailures(out string, n int) string {
	var b strings.Builder
	more := 0
	for block := range strings.SplitSeq(out, "------------------------------\n") {
		if !strings.Contains(block, "[FAILED]") && !strings.Contains(block, "[PANICKED]") {
			continue
		}
		if n == 0 {
			more++
			continue
		}
		n--
		for line := range strings.Lines(block) {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "STEP:") && !strings.HasPrefix(t, "Timeline >>") && !strings.HasPrefix(t, "<< Timeline") {
				b.WriteString(line)
			}
		}
	}
	if more > 0 {
		fmt.Fprintf(&b, "... and %d more failed specs\n", more)
	}
	return b.String()
}

func indent(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString("  " + line)
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func writeTemp(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
