// Command berth-agent joins a node to a hosted control plane and keeps it configured. This first slice has the
// configuration checker:
//
//	berth-agent config validate -f FILE   decode strictly and validate a NodeConfig; every problem on its own line
//
// Exit codes (docs/exit-codes.md): 0 success, 1 internal error, 2 invalid configuration, 64 usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"berth.dev/berth/agent/api/v1alpha1"
)

// Exit codes.
const (
	exitOK            = 0
	exitInternal      = 1
	exitInvalidConfig = 2
	exitUsage         = 64
)

const usage = `usage: berth-agent config validate -f FILE

  config validate   check a NodeConfig (node.berth.dev/v1alpha1): strict decoding, every problem with its field path
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "config" || args[1] != "validate" {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	fs := flag.NewFlagSet("berth-agent config validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "NodeConfig file (YAML or JSON); - for standard input")
	if err := fs.Parse(args[2:]); err != nil {
		return exitUsage
	}
	if *file == "" {
		fmt.Fprintln(stderr, "berth-agent config validate: -f FILE is required")
		return exitUsage
	}
	var data []byte
	var err error
	if *file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: read config: %v\n", err)
		if errors.Is(err, os.ErrNotExist) {
			return exitInvalidConfig
		}
		return exitInternal
	}
	c, err := v1alpha1.Decode(data)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", *file, err)
		return exitInvalidConfig
	}
	if errs := c.Validate(); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "%s: %v\n", *file, e)
		}
		fmt.Fprintf(stderr, "%s: %d problem(s); the node was not changed\n", *file, len(errs))
		return exitInvalidConfig
	}
	fmt.Fprintf(stdout, "%s: valid\n", *file)
	return exitOK
}
