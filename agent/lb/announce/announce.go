package announce

import (
	"context"
	"net/netip"
	"slices"
	"sync"
)

// Announcer announces, of the frontend IPs it is given, those the live set makes this host's.
type Announcer struct {
	members  *Members
	speaker  *Speaker
	mu       sync.Mutex
	ips      []netip.Addr
	onChange func()
}

// OnChange sets f to be called after each recomputation of the owned IPs (a live set or frontend change); set it
// before Run.
func (a *Announcer) OnChange(f func()) {
	a.mu.Lock()
	a.onChange = f
	a.mu.Unlock()
}

// New joins members (whose Changed it takes over) and speaker.
func New(cfg MembersConfig, speaker *Speaker) (*Announcer, error) {
	a := &Announcer{speaker: speaker}
	cfg.Changed = a.update
	m, err := NewMembers(cfg)
	if err != nil {
		return nil, err
	}
	a.members = m
	return a, nil
}

// SetFrontends gives the frontend IPs to announce among the hosts.
func (a *Announcer) SetFrontends(ips []netip.Addr) {
	ips = slices.Clone(ips)
	slices.SortFunc(ips, netip.Addr.Compare)
	a.mu.Lock()
	a.ips = slices.Compact(ips)
	a.mu.Unlock()
	a.update()
}

func (a *Announcer) update() {
	live := a.members.Live()
	a.mu.Lock()
	var mine []netip.Addr
	for _, ip := range a.ips {
		if Owner(ip, live) == a.members.Identity() {
			mine = append(mine, ip)
		}
	}
	f := a.onChange
	a.mu.Unlock()
	a.speaker.Set(mine)
	if f != nil {
		f()
	}
}

// Owned is the frontend IPs this host announces now; Live the live hosts.
func (a *Announcer) Owned() []netip.Addr { return a.speaker.Owned() }
func (a *Announcer) Live() []string      { return a.members.Live() }

// Run keeps the membership and speaks until ctx ends; then it stops answering and gives its Lease up.
func (a *Announcer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	var speakErr error
	go func() {
		defer wg.Done()
		speakErr = a.speaker.Run(ctx)
	}()
	err := a.members.Run(ctx)
	wg.Wait()
	if err != nil {
		return err
	}
	return speakErr
}
