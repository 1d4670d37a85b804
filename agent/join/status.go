package join

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"berth.dev/berth/internal/node/atomicfile"
)

// StatusFile and JoinedFile are in the state directory. The status file is rewritten after every phase; the joined
// marker only after a join that reached Ready.
const (
	StatusFile = "status.json"
	JoinedFile = "joined"
)

// Status is what the last run did, phase by phase. It holds no secret.
type Status struct {
	Node     string        `json:"node"`
	Started  time.Time     `json:"started"`
	Finished *time.Time    `json:"finished,omitempty"`
	Result   string        `json:"result"` // running, joined, failed
	Error    string        `json:"error,omitempty"`
	ExitCode int           `json:"exitCode,omitempty"`
	Phases   []PhaseStatus `json:"phases"`
}

// PhaseStatus is one phase of a run.
type PhaseStatus struct {
	Name     string        `json:"name"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"durationNs"`
	Result   string        `json:"result"` // ok, skipped, failed, running
	Detail   string        `json:"detail,omitempty"`
}

// Marker is the joined marker: what a join that reached Ready joined as and through. A later run compares the
// NodeConfig's endpoint with it to decide whether the control plane must be verified again.
type Marker struct {
	Node     string    `json:"node"`
	Endpoint string    `json:"endpoint"`
	Joined   time.Time `json:"joined"`
}

// ReadMarker reads the joined marker of a state directory. A marker of an older agent ("<node> <time>") has no
// endpoint, which a later run treats as changed.
func ReadMarker(stateDir string) (Marker, error) {
	p := filepath.Join(stateDir, JoinedFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return Marker{}, err
	}
	var m Marker
	if err := json.Unmarshal(data, &m); err != nil {
		return Marker{}, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

func writeMarker(stateDir string, m Marker) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(stateDir, JoinedFile), append(data, '\n'), 0o644)
}

// ReadStatus reads the status file of a state directory.
func ReadStatus(stateDir string) (*Status, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, StatusFile))
	if err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(stateDir, StatusFile), err)
	}
	return &s, nil
}

func writeStatus(stateDir string, s *Status) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(stateDir, StatusFile), append(data, '\n'), 0o644)
}

// Format prints a status for people: one line per phase with its duration.
func (s *Status) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "node %s: %s (run started %s)\n", s.Node, s.Result, s.Started.Format(time.RFC3339))
	if s.Error != "" {
		fmt.Fprintf(&b, "error (exit %d): %s\n", s.ExitCode, s.Error)
	}
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PHASE\tRESULT\tDURATION\tDETAIL")
	for _, p := range s.Phases {
		fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", p.Name, p.Result, p.Duration.Round(time.Millisecond), p.Detail)
	}
	w.Flush()
	return b.String()
}
