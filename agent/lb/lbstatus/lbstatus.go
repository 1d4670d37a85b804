// Package lbstatus is the LB host role's state as `berth-agent status` shows it: a JSON file the host rewrites
// (atomically) after each apply and each change of what it announces.
package lbstatus

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"berth.dev/berth/internal/node/atomicfile"
)

// Status is the LB host's state.
type Status struct {
	Identity string `json:"identity"`
	Mode     string `json:"mode"`
	// Synced is when the table was last applied; Error the last apply's failure, if it failed.
	Synced time.Time `json:"synced"`
	Error  string    `json:"error,omitempty"`
	// Frontends are the frontends in the table with their nodes.
	Frontends []Frontend `json:"frontends"`
	// LiveHosts are the live LB hosts; Announced the frontend IPs this host announces (empty without -interface).
	LiveHosts []string `json:"liveHosts,omitempty"`
	Announced []string `json:"announced,omitempty"`
	// ProbesDown are the probe targets that are down.
	ProbesDown []string `json:"probesDown,omitempty"`
}

// Frontend is one frontend IP:port/protocol and its nodes.
type Frontend struct {
	Frontend string   `json:"frontend"`
	Backends []string `json:"backends"`
}

// Write writes s to path atomically (0644: it holds no secret).
func Write(path string, s *Status) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}

// Read reads the status at path.
func Read(path string) (*Status, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

// Format is the status for people.
func (s *Status) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "LB host %s (%s mode): table applied %s\n", s.Identity, s.Mode, s.Synced.Format(time.RFC3339))
	if s.Error != "" {
		fmt.Fprintf(&b, "last apply failed: %s\n", s.Error)
	}
	if len(s.LiveHosts) > 0 {
		fmt.Fprintf(&b, "live LB hosts: %s\n", strings.Join(s.LiveHosts, ", "))
		fmt.Fprintf(&b, "announced here: %s\n", orNone(s.Announced))
	}
	if len(s.ProbesDown) > 0 {
		fmt.Fprintf(&b, "probes down: %s\n", strings.Join(s.ProbesDown, ", "))
	}
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "FRONTEND\tNODES")
	for _, f := range s.Frontends {
		fmt.Fprintf(w, "%s\t%s\n", f.Frontend, orNone(f.Backends))
	}
	w.Flush()
	return b.String()
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
