package shares_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/test/shareserver"
	"berth.dev/berth/test/tier"
)

// BenchmarkNodeCalls times the drivers' Node calls in a guest (test/csibench, next to the socket: no SSH in the
// figures) against the real servers on this host: for each protocol, a stage that mounts the share (no other
// volume of it staged) and one that only binds (another volume keeps it mounted), each followed by a publish,
// unpublish and unstage; and the time from an SMB server's restart until a pod's write through its volume works
// again (the kernel's reconnect, which berth leaves alone for running pods), asked every 250 ms.
//
//	go test -run '^$' -bench NodeCalls -benchtime 5x ./test/shares
func BenchmarkNodeCalls(b *testing.B) {
	tier.Require(b, tier.Root, tier.QEMU, tier.Samba, tier.Ganesha)
	const password = "pw-Berth-bench"
	smb, nfs := shareserver.SMB(b, password), shareserver.NFS(b)
	for _, d := range []string{filepath.Join(smb.Dir, "bench"), filepath.Join(smb.Dir, "keep"), filepath.Join(nfs.Dir, "bench"), filepath.Join(nfs.Dir, "keep")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			b.Fatal(err)
		}
	}
	g := guest{b, bootWith(b, smb, nfs, "csibench", "csicall")}
	secret := fmt.Sprintf(`, "secrets": {"username": "root", "password": %q}`, password)
	for _, d := range []struct{ name, driver, source, secret string }{
		{"SMB", "smb.shares.berth.dev", "//" + smbInGuest + "/data", secret},
		{"NFS", "nfs.shares.berth.dev", nfsInGuest + ":/export", ""},
	} {
		for _, mounted := range []bool{false, true} {
			name := d.name + map[bool]string{false: "/mount", true: "/bind"}[mounted]
			b.Run(name, func(b *testing.B) {
				dir := "/tmp/bench-" + strings.ToLower(d.name)
				g.g.Run("mkdir -p " + dir)
				g.g.Write(dir+"/stage.json", []byte(stage("bench-1", d.source, "bench", d.secret)), 0o600)
				g.g.Write(dir+"/publish.json", []byte(publish("pod-bench", "bench-1", false)), 0o600)
				g.g.Write(dir+"/keep.json", []byte(stage("keep-1", d.source, "keep", d.secret)), 0o600)
				keep := ""
				if mounted {
					keep = " -keep " + dir + "/keep.json"
				}
				b.ResetTimer()
				out, err := g.g.Try(fmt.Sprintf("csibench -socket /var/lib/kubelet/plugins/%s/csi.sock -n %d -stage %s/stage.json -publish %s/publish.json%s",
					d.driver, b.N, dir, dir, keep))
				b.StopTimer()
				if err != nil {
					b.Fatalf("csibench: %v\n%s", err, out)
				}
				var res map[string]struct{ MeanNS, WorstNS int64 }
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					b.Fatalf("csibench's output: %v\n%s", err, out)
				}
				for call, unit := range map[string]string{"NodeStageVolume": "stage-ms", "NodePublishVolume": "publish-ms", "NodeUnpublishVolume": "unpublish-ms", "NodeUnstageVolume": "unstage-ms"} {
					b.ReportMetric(float64(res[call].MeanNS)/1e6, unit+"/op")
				}
				b.ReportMetric(float64(res["NodeStageVolume"].WorstNS)/1e6, "stage-worst-ms")
			})
		}
	}
	b.Run("SMBServerRestart", func(b *testing.B) {
		g.must("smb.shares.berth.dev", "NodeStageVolume", stage("restart-1", "//"+smbInGuest+"/data", "bench", secret))
		g.must("smb.shares.berth.dev", "NodePublishVolume", publish("pod-r", "restart-1", false))
		pid := podProcess(g)
		defer g.g.Run("kill " + pid)
		vol := target("pod-r", "restart-1")
		var total, worst time.Duration
		b.ResetTimer()
		for i := range b.N {
			smb.Restart()
			want := fmt.Sprintf("round-%d", i)
			out, took, err := writesAgain(g, pid, vol, want, 250*time.Millisecond)
			if err != nil || out != want+"\n" {
				b.Fatalf("the pod's SMB volume after restart %d: %q %v", i, out, err)
			}
			total += took
			worst = max(worst, took)
		}
		b.StopTimer()
		b.ReportMetric(total.Seconds()/float64(b.N), "s-to-usable/op")
		b.ReportMetric(worst.Seconds(), "s-to-usable-worst")
	})
}
