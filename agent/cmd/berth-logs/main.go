// Command berth-logs is the log shipper the berth-logs DaemonSet runs (deploy/logs.yaml), in an image of its own
// (berth.dev/berth-logs, which every node image pre-caches): the agent's logs role without its join and load
// balancer code, so its binary, and the memory its pages take, stay small.
//
//	berth-logs validate -f FILE   decode strictly and validate a LogShipperConfig; every problem on its own line
//	berth-logs run -config FILE   ship every container log (and the journal) to each sink, at least once
//	berth-logs image -o FILE      write its own image (layout.LogsImage) as an OCI tarball, for the bake's images
//
// Exit codes (docs/exit-codes.md): 0 success (SIGTERM included), 1 internal error, 64 usage error, 78 invalid
// configuration.
package main

import (
	"os"

	"berth.dev/berth/agent/logscmd"
)

func main() { os.Exit(logscmd.Main("berth-logs", os.Args[1:], os.Stdout, os.Stderr)) }
