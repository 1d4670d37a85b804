// Package configcheck is what the agent's commands share to take a config file: read it (package configfile),
// decode it strictly and validate it, printing every problem (unknown and duplicate fields, then the values) in
// one pass, each on its own line with the file and the field path, and the exit code for the outcome.
package configcheck

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"berth.dev/berth/agent/api/strict"
	"berth.dev/berth/agent/configfile"
	"berth.dev/berth/internal/node/exitcode"
)

// FileFlag parses `-f FILE` (required; - for standard input) and nothing else from args.
func FileFlag(name string, args []string, stderr io.Writer) (string, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "config file (YAML or JSON); - for standard input")
	if err := fs.Parse(args); err != nil {
		return "", exitcode.Usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return "", exitcode.Usage
	}
	if *file == "" {
		fmt.Fprintf(stderr, "%s: -f FILE is required\n", name)
		return "", exitcode.Usage
	}
	return *file, exitcode.OK
}

// ValidateCmd is `<role> validate -f FILE`: decode and validate one config document, say it is valid or name
// every problem.
func ValidateCmd[T any](name string, args []string, stdout, stderr io.Writer, decode func([]byte) (*T, error), validate func(*T) field.ErrorList) int {
	file, code := FileFlag(name, args, stderr)
	if code != exitcode.OK {
		return code
	}
	if _, code := Check(file, stderr, decode, validate); code != exitcode.OK {
		return code
	}
	fmt.Fprintf(stdout, "%s: valid\n", file)
	return exitcode.OK
}

// Parse decodes data strictly and validates it: the config, or every problem (unknown and duplicate fields, then
// invalid values, each with its field path).
func Parse[T any](data []byte, decode func([]byte) (*T, error), validate func(*T) field.ErrorList) (*T, []string) {
	c, err := decode(data)
	var se *strict.Error
	var problems []string
	if errors.As(err, &se) {
		problems = append(problems, se.Problems...)
	} else if err != nil {
		return nil, []string{err.Error()}
	}
	for _, e := range validate(c) {
		problems = append(problems, e.Error())
	}
	if len(problems) > 0 {
		return nil, problems
	}
	return c, nil
}

// Check reads a config file of any kind ("-": standard input), decodes it strictly and validates it, printing
// every problem in one pass, each on its own line. A problem with the document is exitcode.InvalidConfig.
func Check[T any](file string, stderr io.Writer, decode func([]byte) (*T, error), validate func(*T) field.ErrorList) (*T, int) {
	c, _, code := Load(file, stderr, decode, validate)
	return c, code
}

// Load is Check that also returns the document's bytes (what a watcher of the file compares changes with).
func Load[T any](file string, stderr io.Writer, decode func([]byte) (*T, error), validate func(*T) field.ErrorList) (*T, []byte, int) {
	var data []byte
	var err error
	if file == "-" {
		data, err = configfile.ReadBounded(os.Stdin)
	} else {
		data, err = configfile.ReadFile(file)
	}
	if err != nil {
		fmt.Fprintf(stderr, "read config: %v\n", err)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, configfile.ErrNotAConfig) {
			return nil, nil, exitcode.InvalidConfig
		}
		return nil, nil, exitcode.Internal
	}
	c, problems := Parse(data, decode, validate)
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "%s: %s\n", file, p)
		}
		fmt.Fprintf(stderr, "%s: %d problem(s); nothing was changed\n", file, len(problems))
		return nil, nil, exitcode.InvalidConfig
	}
	return c, data, exitcode.OK
}
