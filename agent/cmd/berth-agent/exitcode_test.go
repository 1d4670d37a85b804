package main

import (
	"errors"
	"fmt"
	"testing"

	agentdaemon "berth.dev/berth/agent/daemon"
	"berth.dev/berth/internal/node/exitcode"
)

// One cause, one code: a recovered panic is an internal error (restarted), a config error is EX_CONFIG (not
// restarted), and no code the agent chooses is 2, which a Go crash exits with.
func TestExitCodeOfEachCause(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want int
	}{
		"none":          {nil, exitcode.OK},
		"config":        {&agentdaemon.ConfigError{Err: errors.New("spec.controlPlane.endpoint: Required value")}, exitcode.InvalidConfig},
		"panic":         {&agentdaemon.PanicError{Value: "boom"}, exitcode.Internal},
		"wrapped panic": {fmt.Errorf("run: %w", &agentdaemon.PanicError{Value: "boom"}), exitcode.Internal},
		"other":         {errors.New("D-Bus went away"), exitcode.Internal},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%s: exit %d, want %d", name, got, tc.want)
		}
	}
	for _, i := range exitcode.All() {
		if i.Code == 2 {
			t.Errorf("code 2 (%s) is what a Go panic exits with; a crash would look like it", i.Name)
		}
	}
}
