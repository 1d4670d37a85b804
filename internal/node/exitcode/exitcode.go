// Package exitcode is every exit code of berth-agent with its meaning. The agent's commands exit with these;
// berth-agent.service's RestartPreventExitStatus lists exactly the codes that waiting cannot fix (a test in
// systemd/ checks the unit against Permanent), and docs/exit-codes.md documents each (a test checks the table).
package exitcode

import "slices"

// The codes. 10-14 are preflight's failure classes. 64 and 78 are sysexits.h's EX_USAGE and EX_CONFIG. No code is
// 2: a Go panic or fatal runtime error exits 2, and a crash must never look like a bad configuration (which systemd
// does not restart).
const (
	OK            = 0
	Internal      = 1
	InvalidConfig = 78
	DNS           = 10
	Unreachable   = 11
	TLS           = 12
	Token         = 13
	ClockSkew     = 14
	NameTaken     = 15
	Timeout       = 16
	Services      = 17
	Usage         = 64
)

// Info describes one code.
type Info struct {
	Code int
	// Name is the class as docs/exit-codes.md names it.
	Name string
	// Permanent is true when waiting cannot fix the cause, so systemd must not restart the agent after it.
	Permanent bool
}

var table = []Info{
	{OK, "success", false},
	{Internal, "internal error", false},
	{DNS, "DNS", false},
	{Unreachable, "unreachable", false},
	{TLS, "TLS / CA pin", true},
	{Token, "token", true},
	{ClockSkew, "clock skew", false},
	{NameTaken, "name taken", true},
	{Timeout, "timed out waiting", false},
	{Services, "systemd job failed", false},
	{Usage, "usage", true},
	{InvalidConfig, "invalid configuration", true},
}

// All lists every code, in increasing order.
func All() []Info { return slices.Clone(table) }

// Permanent lists the codes after which the agent must not be restarted, in increasing order.
func Permanent() []int {
	var out []int
	for _, i := range table {
		if i.Permanent {
			out = append(out, i.Code)
		}
	}
	return out
}

// Lookup returns the code's description; ok is false for a code the agent never uses.
func Lookup(code int) (Info, bool) {
	i := slices.IndexFunc(table, func(i Info) bool { return i.Code == code })
	if i < 0 {
		return Info{}, false
	}
	return table[i], true
}
