package systemd

import "testing"

func TestTooNew(t *testing.T) {
	unit := []byte("[Service]\nExecStart=/bin/true\n  StateDirectory=berth\nType=exec\n")
	got := TooNew(unit, 229)
	if len(got) != 2 || got[0] != `line 3: "StateDirectory=berth" needs systemd 235` || got[1] != `line 4: "Type=exec" needs systemd 240` {
		t.Errorf("TooNew(229) = %q", got)
	}
	if got := TooNew(unit, 252); len(got) != 0 {
		t.Errorf("TooNew(252) = %q, want none", got)
	}
}
