package systemd

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"berth.dev/berth/internal/node/exitcode"
	"berth.dev/berth/internal/node/layout"
)

// berth-agent.service must not restart the agent after exactly the codes waiting cannot fix.
func TestAgentRestartPreventExitStatusMatchesExitCodes(t *testing.T) {
	unit, err := Unit(layout.AgentUnit)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RestartPreventExitStatus=(.*)$`).FindStringSubmatch(string(unit))
	if m == nil {
		t.Fatal("berth-agent.service has no RestartPreventExitStatus=")
	}
	var got []int
	for _, f := range strings.Fields(m[1]) {
		c, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("RestartPreventExitStatus=%s: %v", m[1], err)
		}
		got = append(got, c)
	}
	slices.Sort(got)
	if want := exitcode.Permanent(); !slices.Equal(got, want) {
		t.Errorf("RestartPreventExitStatus=%v, want exitcode.Permanent() %v", got, want)
	}
}

// The units run the agent and name the unit files the layout names.
func TestUnitsMatchLayout(t *testing.T) {
	for _, u := range []string{layout.AgentUnit, layout.KubeletUnit, layout.KubeProxyUnit} {
		if !slices.Contains(Units(), u) {
			t.Errorf("no unit %s among %v", u, Units())
		}
	}
	unit, _ := Unit(layout.AgentUnit)
	if !strings.Contains(string(unit), "ExecStart="+layout.AgentBinary+" run") {
		t.Errorf("%s does not run %s", layout.AgentUnit, layout.AgentBinary)
	}
	if _, ok := RuntimeUnits()[layout.ContainerdUnit]; !ok {
		t.Errorf("the static runtime has no %s", layout.ContainerdUnit)
	}
}
