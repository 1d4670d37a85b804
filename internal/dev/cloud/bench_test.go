package cloud_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/test/nodeimage"
	"berth.dev/berth/test/toolbin"
)

// BenchmarkBootToReady boots, one at a time on the cloud's bridge, a bare guest of the baked image (no NodeConfig:
// the baseline) and then two nodes that join, and reports for each: guest start → cloud-init done
// (cloud-final.service active), and for the nodes guest start → Node Ready. Guest start is qemu's start on the
// host; the other two are the guest's own timestamps (its clock comes from the host's RTC; Ready's transition
// time has one-second precision). Run with -benchtime 1x: one iteration boots three guests (about 5 minutes).
func BenchmarkBootToReady(b *testing.B) {
	image := nodeimage.QCOW2(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for i := range b.N {
		c, err := cloud.Up(ctx, cloud.Config{Name: fmt.Sprintf("b%d-%d", os.Getpid(), i), Dir: b.TempDir(),
			BinDir: toolbin.Kubernetes.ForTest(b), Image: image})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Down() })
		bare, err := c.AddBareGuest(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(cloudInitDone(b, ctx, bare).Seconds(), "bare-start→cloud-init-done-s")
		if err := bare.Kill(); err != nil { // one guest at a time
			b.Fatal(err)
		}
		for k := range 2 {
			n, err := c.AddNode(ctx)
			if err != nil {
				b.Fatal(err)
			}
			done := cloudInitDone(b, ctx, n)
			wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			node, err := c.WaitJoined(wctx, n, time.Second)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			ready := nodeready.Condition(node).LastTransitionTime.Time
			b.ReportMetric(done.Seconds(), fmt.Sprintf("node%d-start→cloud-init-done-s", k+1))
			b.ReportMetric(ready.Sub(n.Started).Seconds(), fmt.Sprintf("node%d-start→Ready-s", k+1))
			b.Logf("%s: start → cloud-init done %v, → Ready %v", n.Name, done.Round(time.Second), ready.Sub(n.Started).Round(time.Second))
		}
	}
	b.ReportMetric(0, "ns/op")
}

// cloudInitDone waits for the guest's SSH and cloud-final.service, and returns guest start → cloud-final active.
func cloudInitDone(b *testing.B, ctx context.Context, n *cloud.Node) time.Duration {
	if err := n.WaitSSH(ctx); err != nil {
		b.Fatal(err)
	}
	out, err := n.Run(ctx, "cloud-init status --wait >/dev/null; systemctl show -p ActiveEnterTimestamp --timestamp=unix --value cloud-final.service")
	secs, perr := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(out), "@"), 10, 64)
	if err != nil || perr != nil {
		b.Fatalf("%s: cloud-final timestamp %q: %v %v", n.Name, out, err, perr)
	}
	return time.Unix(secs, 0).Sub(n.Started)
}
