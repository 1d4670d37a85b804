// Package announce decides which LB host announces each frontend IP and announces it: the LB hosts keep one
// Lease each (members), every host computes the same owner for each frontend IP from the live set (Owner, a
// rendezvous hash), and the owner answers ARP for its frontend IPs and sends gratuitous ARP when it takes one over
// (speaker), as MetalLB's layer-2 mode does. The address is not put on an interface: in the floating-IP mode the
// LB host must forward the frontend IP's packets, not take them in.
//
// When a host dies its Lease stops being renewed; within the lease duration the others drop it from the live set,
// and each of its frontend IPs moves to the host the hash picks next. Only the dead host's IPs move. Because every
// host picks the same node for the same flow (package dataplane), a flow's retransmits through the new host reach
// the node that holds it.
package announce

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
)

// Owner is the host (of hosts, the live set) that announces ip: the one with the highest hash of (host, ip).
// Every host computes the same answer from the same live set, and removing a host moves only its own IPs.
func Owner(ip netip.Addr, hosts []string) string {
	var best string
	var bestScore uint64
	for _, h := range hosts {
		if s := score(h, ip); best == "" || s > bestScore || (s == bestScore && h < best) {
			best, bestScore = h, s
		}
	}
	return best
}

func score(host string, ip netip.Addr) uint64 {
	h := sha256.New()
	h.Write([]byte(host))
	h.Write([]byte{0})
	b, _ := ip.MarshalBinary()
	h.Write(b)
	return binary.BigEndian.Uint64(h.Sum(nil))
}
