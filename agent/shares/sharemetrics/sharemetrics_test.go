package sharemetrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"berth.dev/berth/agent/shares/health"
)

// A share found dead counts as broken until a remount or a good probe; a share no longer mounted stops counting;
// every result is counted per driver.
func TestDriverCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	smb, nfs := m.Driver("smb.shares.berth.dev"), m.Driver("nfs.shares.berth.dev")
	smb.Round([]string{"a", "b", "c"})
	smb.Probed("a", health.Result{State: health.Dead})
	smb.Probed("b", health.Result{State: health.Hung})
	smb.Probed("c", health.Result{State: health.OK})
	nfs.Round([]string{"x"})
	nfs.Probed("x", health.Result{State: health.Failed})
	smb.Remounted("a", nil)
	smb.Remounted("b", errors.New("no"))
	want := `
# HELP berth_shares_broken Shares whose last probe found them dead or hung, by driver.
# TYPE berth_shares_broken gauge
berth_shares_broken{driver="nfs.shares.berth.dev"} 0
berth_shares_broken{driver="smb.shares.berth.dev"} 1
# HELP berth_shares_mounted Shares mounted on this node, by driver (one mount serves every volume of the same share, options and credentials).
# TYPE berth_shares_mounted gauge
berth_shares_mounted{driver="nfs.shares.berth.dev"} 1
berth_shares_mounted{driver="smb.shares.berth.dev"} 3
# HELP berth_shares_remounts_total Remounts of dead or hung shares, by driver and result (ok, error).
# TYPE berth_shares_remounts_total counter
berth_shares_remounts_total{driver="nfs.shares.berth.dev",result="error"} 0
berth_shares_remounts_total{driver="nfs.shares.berth.dev",result="ok"} 0
berth_shares_remounts_total{driver="smb.shares.berth.dev",result="error"} 1
berth_shares_remounts_total{driver="smb.shares.berth.dev",result="ok"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "berth_shares_broken", "berth_shares_mounted", "berth_shares_remounts_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.probes.WithLabelValues("smb.shares.berth.dev", "hung")); got != 1 {
		t.Errorf("hung probes %v", got)
	}
	smb.Round([]string{"a"}) // b was unmounted
	if got := testutil.ToFloat64(m.broken.WithLabelValues("smb.shares.berth.dev")); got != 0 {
		t.Errorf("broken after b went: %v", got)
	}
}
