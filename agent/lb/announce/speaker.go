package announce

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// Speaker answers ARP requests for the frontend IPs this host owns, on one interface, and sends gratuitous ARP
// when it takes one over (three times, a second apart, as a lost frame would otherwise leave clients on the old
// host until their ARP entries expire).
type Speaker struct {
	c   *arp.Client
	log *slog.Logger
	mu  sync.Mutex
	// owned maps each owned IP to the gratuitous ARPs still to send for it.
	owned map[netip.Addr]int
	kick  chan struct{}
}

const gratuitousRepeats = 3

// NewSpeaker speaks through c (arp.Dial on the interface the clients reach the frontend IPs on).
func NewSpeaker(c *arp.Client, log *slog.Logger) *Speaker {
	if log == nil {
		log = slog.Default()
	}
	return &Speaker{c: c, log: log, owned: map[netip.Addr]int{}, kick: make(chan struct{}, 1)}
}

// Set makes ips the owned IPs: new ones are announced at once.
func (s *Speaker) Set(ips []netip.Addr) {
	s.mu.Lock()
	want := map[netip.Addr]bool{}
	added := false
	for _, ip := range ips {
		want[ip] = true
		if _, ok := s.owned[ip]; !ok {
			s.owned[ip] = gratuitousRepeats
			added = true
		}
	}
	for ip := range s.owned {
		if !want[ip] {
			delete(s.owned, ip)
		}
	}
	s.mu.Unlock()
	if added {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Owned is the owned IPs, sorted.
func (s *Speaker) Owned() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Addr, 0, len(s.owned))
	for ip := range s.owned {
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (s *Speaker) owns(ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.owned[ip]
	return ok
}

// Run answers requests and sends the gratuitous ARPs until ctx ends.
func (s *Speaker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			s.gratuitous()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-s.kick:
			}
		}
	}()
	for ctx.Err() == nil {
		s.c.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		p, _, err := s.c.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Debug("arp read", "err", err)
			continue // a frame that is not ARP, or a malformed one
		}
		if p.Operation != arp.OperationRequest || !s.owns(p.TargetIP) {
			continue
		}
		if err := s.c.Reply(p, s.c.HardwareAddr(), p.TargetIP); err != nil {
			s.log.Warn("arp reply", "ip", p.TargetIP, "err", err)
		}
	}
	return nil
}

// gratuitous sends the gratuitous ARPs due: a request and a reply with the IP as both sender and target, to the
// broadcast address (Linux updates an existing neighbour entry from either).
func (s *Speaker) gratuitous() {
	s.mu.Lock()
	var due []netip.Addr
	for ip, n := range s.owned {
		if n > 0 {
			due = append(due, ip)
			s.owned[ip] = n - 1
		}
	}
	s.mu.Unlock()
	for _, ip := range due {
		for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
			p, err := arp.NewPacket(op, s.c.HardwareAddr(), ip, ethernet.Broadcast, ip)
			if err == nil {
				err = s.c.WriteTo(p, ethernet.Broadcast)
			}
			if err != nil {
				s.log.Warn("gratuitous arp", "ip", ip, "err", err)
			}
		}
	}
}
