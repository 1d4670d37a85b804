// Package layers checks the import graph against berth's layering rules, in the spirit of Kubernetes'
// import-restrictions: the rules are data (Rules), the graph comes from `go list -deps` (List), and Check names
// every package that breaks a rule together with the dependency that breaks it.
package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
)

// Module is berth's module path; patterns in rules are relative to it unless they name the standard library.
const Module = "berth.dev/berth"

// Package is one package of the module as `go list` reports it (its non-test files only).
type Package struct {
	ImportPath string
	Imports    []string // direct
	Deps       []string // transitive
}

// Rule restricts what the packages matching From may depend on (transitively).
type Rule struct {
	Name string
	// From selects the packages the rule applies to; Except removes some of them. Patterns are module-relative
	// ("agent/...": agent and everything below it; "cloud-init": that package only).
	From, Except []string
	// Forbid lists module packages none of whose packages may be among the deps.
	Forbid []string
	// AllowOnly, if set, lists the only module packages that may be among the deps.
	AllowOnly []string
	// NoTesting forbids linking the testing package through a package of this module (a direct import of
	// "testing" by the package or by any module package it depends on). Third-party packages that import it
	// themselves (packer-plugin-sdk's packer package does) are outside berth's control and not counted.
	NoTesting bool
}

// Rules are berth's layers (docs/architecture.md draws them).
var Rules = []Rule{
	{Name: "the agent never depends on the image builder", From: []string{"agent/..."}, Forbid: []string{"imagebuilder/..."}},
	{Name: "the image builder never depends on the agent", From: []string{"imagebuilder/..."}, Forbid: []string{"agent/..."}},
	{Name: "the node contract depends on neither half", From: []string{"internal/node/...", "systemd", "cloud-init"},
		Forbid: []string{"agent/...", "imagebuilder/...", "test/...", "cmd/...", "internal/dev/..."}},
	{Name: "the versioned API depends on no implementation", From: []string{"agent/api/..."},
		AllowOnly: []string{"agent/api/...", "internal/node/bootstraptoken", "internal/node/capin"}},
	{Name: "phases and renderers read only the internal NodeConfig",
		From: []string{"agent/join/...", "agent/render/...", "agent/preflight/...", "agent/bootstrap/...",
			"agent/podroutes/...", "agent/imagestore/...", "agent/systemdbus/...", "agent/nodeconfig/..."},
		Forbid: []string{"agent/api/...", "agent/config/..."}},
	{Name: "the product never depends on test code", From: []string{"..."}, Except: []string{"test/..."},
		Forbid: []string{"test/..."}},
	{Name: "no product package links testing", From: []string{"..."}, Except: []string{"test/..."}, NoTesting: true},
	{Name: "no dev tool links testing", From: []string{"cmd/...", "internal/dev/..."}, NoTesting: true},
	{Name: "the agent and the image builder never depend on the dev environment",
		From: []string{"agent/...", "imagebuilder/...", "packer/..."}, Forbid: []string{"internal/dev/...", "cmd/..."}},
}

// Violation is one package breaking one rule.
type Violation struct {
	Rule, Package, Dep string
	// Via is the module package that imports Dep directly (NoTesting rules).
	Via string
}

func (v Violation) String() string {
	if v.Via != "" && v.Via != v.Package {
		return fmt.Sprintf("%s: %s links %s through %s", v.Rule, v.Package, v.Dep, v.Via)
	}
	return fmt.Sprintf("%s: %s depends on %s", v.Rule, v.Package, v.Dep)
}

// match reports whether the import path matches the module-relative pattern.
func match(pattern, path string) bool {
	rel, ok := strings.CutPrefix(path, Module)
	if !ok || (rel != "" && rel[0] != '/') {
		return false
	}
	rel = strings.TrimPrefix(rel, "/")
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return rel == base || strings.HasPrefix(rel, base+"/")
	}
	return rel == pattern
}

func matchAny(patterns []string, path string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, path) })
}

func inModule(path string) bool { return match("...", path) }

// Check returns every violation of rules in pkgs, sorted.
func Check(pkgs []Package, rules []Rule) []Violation {
	byPath := map[string]Package{}
	for _, p := range pkgs {
		byPath[p.ImportPath] = p
	}
	var out []Violation
	for _, r := range rules {
		for _, p := range pkgs {
			if !matchAny(r.From, p.ImportPath) || matchAny(r.Except, p.ImportPath) {
				continue
			}
			for _, d := range p.Deps {
				if !inModule(d) {
					continue
				}
				if matchAny(r.Forbid, d) || (len(r.AllowOnly) > 0 && !matchAny(r.AllowOnly, d)) {
					out = append(out, Violation{Rule: r.Name, Package: p.ImportPath, Dep: d})
				}
			}
			if r.NoTesting {
				for _, via := range append([]string{p.ImportPath}, p.Deps...) {
					if dp, ok := byPath[via]; ok && slices.Contains(dp.Imports, "testing") {
						out = append(out, Violation{Rule: r.Name, Package: p.ImportPath, Dep: "testing", Via: via})
					}
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Violation) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// List runs `go list -deps` over the module in dir and returns the module's packages (without test files).
func List(dir string) ([]Package, error) {
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Deps,Error", "-deps", "./...")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps ./...: %w: %s", err, stderr.String())
	}
	var pkgs []Package
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Package
			Error *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		if inModule(p.ImportPath) {
			pkgs = append(pkgs, p.Package)
		}
	}
	return pkgs, nil
}
