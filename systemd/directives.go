package systemd

import (
	"fmt"
	"sort"
	"strings"
)

// minVersion is the systemd version that introduced unit directives (and values) berth must not use on older
// targets: Ubuntu 16.04 has systemd 229.
var minVersion = map[string]int{
	"ReadWritePaths=": 231, "ReadOnlyPaths=": 231, "InaccessiblePaths=": 231, "DynamicUser=": 232,
	"ProtectSystem=strict": 232, "ProtectKernelTunables=": 232, "ProtectKernelModules=": 232,
	"ProtectControlGroups=": 232, "RestrictNamespaces=": 233, "StateDirectory=": 235, "RuntimeDirectory=": 211,
	"LogsDirectory=": 235, "CacheDirectory=": 235, "ConfigurationDirectory=": 235, "Type=exec": 240,
	"ExecCondition=": 243, "OOMPolicy=": 243, "ProtectHostname=": 242, "ProtectKernelLogs=": 244,
	"StartLimitIntervalSec=": 230, "ExecStart=+": 231, "ExecStart=!": 231, "RestartMaxDelaySec=": 254,
	"WatchdogSignal=": 240, "Type=notify-reload": 253,
}

// TooNew lists the lines of a unit file or drop-in that use a directive newer than systemd version, each as
// "line N: <line> needs systemd V".
func TooNew(unit []byte, version int) []string {
	var problems []string
	for i, line := range strings.Split(string(unit), "\n") {
		line = strings.TrimSpace(line)
		for directive, since := range minVersion {
			if strings.HasPrefix(line, directive) && version < since {
				problems = append(problems, fmt.Sprintf("line %d: %q needs systemd %d", i+1, line, since))
			}
		}
	}
	sort.Strings(problems)
	return problems
}
