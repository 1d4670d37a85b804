package host

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"berth.dev/berth/agent/lb/announce"
	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/lbmetrics"
	"berth.dev/berth/agent/lb/lbstatus"
)

// reporter keeps the role's status file and metrics up to date after each apply and each change of what this host
// announces (the announcer calls from its own goroutine, hence the lock).
type reporter struct {
	mu       sync.Mutex
	st       lbstatus.Status
	file     string
	metrics  *lbmetrics.Metrics
	announce *announce.Announcer
	log      *slog.Logger
}

func (r *reporter) applied(why string, took time.Duration, fs []dataplane.Frontend, probes map[string]bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.st.Error = err.Error()
	} else {
		r.st.Error = ""
		r.st.Synced = time.Now()
		r.st.Frontends = r.st.Frontends[:0]
		per := map[string]int{}
		for _, f := range fs {
			name := fmt.Sprintf("%s:%d/%s", f.IP, f.Port, f.Protocol)
			var nodes []string
			for _, b := range f.Backends {
				nodes = append(nodes, b.Name)
			}
			slices.Sort(nodes)
			r.st.Frontends = append(r.st.Frontends, lbstatus.Frontend{Frontend: name, Backends: nodes})
			per[name] = len(nodes)
		}
		if r.metrics != nil {
			r.metrics.Backends(per)
		}
	}
	r.st.ProbesDown = r.st.ProbesDown[:0]
	for url, down := range probes {
		if down {
			r.st.ProbesDown = append(r.st.ProbesDown, url)
		}
	}
	slices.Sort(r.st.ProbesDown)
	if r.metrics != nil {
		r.metrics.Synced(why, took, err)
		r.metrics.ProbeTargets(probes)
	}
	r.writeLocked()
}

func (r *reporter) announced() {
	if r.announce == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.LiveHosts = r.announce.Live()
	r.st.Announced = r.st.Announced[:0]
	for _, ip := range r.announce.Owned() {
		r.st.Announced = append(r.st.Announced, ip.String())
	}
	if r.metrics != nil {
		r.metrics.Announcing(r.st.Announced, len(r.st.LiveHosts))
	}
	r.writeLocked()
}

func (r *reporter) writeLocked() {
	if r.file == "" {
		return
	}
	if err := lbstatus.Write(r.file, &r.st); err != nil {
		r.log.Warn("cannot write the status file", "file", r.file, "err", err)
	}
}

// frontendIPs are the frontends' IPs.
func frontendIPs(fs []dataplane.Frontend) []netip.Addr {
	ips := make([]netip.Addr, 0, len(fs))
	for _, f := range fs {
		ips = append(ips, f.IP)
	}
	return ips
}
