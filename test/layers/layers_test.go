package layers

import (
	"slices"
	"strings"
	"testing"
)

// pending are violations the tree still has, each with the issue item that removes it. The test fails when one
// of them is gone (so the list only shrinks) as well as when a new one appears.
var pending = map[string]string{}

// The real tree, as `go list -deps` sees it, breaks no rule.
func TestTreeKeepsItsLayers(t *testing.T) {
	pkgs, err := List("../..")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found only %d packages of the module", len(pkgs))
	}
	seen := map[string]bool{}
	for _, v := range Check(pkgs, Rules) {
		if _, ok := pending[v.String()]; ok {
			seen[v.String()] = true
			continue
		}
		t.Errorf("%s", v)
	}
	for v, why := range pending {
		if !seen[v] {
			t.Errorf("pending violation is gone, remove it from the list: %s (%s)", v, why)
		}
	}
}

const m = Module + "/"

// pkg is a module package with direct imports; deps are computed from the graph.
func graph(direct map[string][]string) []Package {
	var deps func(p string, seen map[string]bool)
	deps = func(p string, seen map[string]bool) {
		for _, d := range direct[p] {
			if !seen[d] {
				seen[d] = true
				deps(d, seen)
			}
		}
	}
	var out []Package
	for p, imps := range direct {
		if !strings.HasPrefix(p, m) {
			continue
		}
		seen := map[string]bool{}
		deps(p, seen)
		var ds []string
		for d := range seen {
			ds = append(ds, d)
		}
		slices.Sort(ds)
		out = append(out, Package{ImportPath: p, Imports: imps, Deps: ds})
	}
	return out
}

// Each wrong-way import issue 12 found in the old tree is caught, transitively too, and named with its rule.
func TestRulesCatchWrongWayImports(t *testing.T) {
	for _, c := range []struct {
		name   string
		direct map[string][]string
		want   []string
	}{
		{"agent imports the image builder's distro", map[string][]string{
			m + "agent/render": {m + "imagebuilder/distro"}, m + "imagebuilder/distro": nil},
			[]string{"the agent never depends on the image builder: " + m + "agent/render depends on " + m + "imagebuilder/distro"}},
		{"agent reaches the image builder through another agent package", map[string][]string{
			m + "agent/cmd/berth-agent": {m + "agent/join"}, m + "agent/join": {m + "imagebuilder/distro"}, m + "imagebuilder/distro": nil},
			[]string{
				"the agent never depends on the image builder: " + m + "agent/cmd/berth-agent depends on " + m + "imagebuilder/distro",
				"the agent never depends on the image builder: " + m + "agent/join depends on " + m + "imagebuilder/distro"}},
		{"image builder imports the agent's atomicfile", map[string][]string{
			m + "imagebuilder/bake": {m + "agent/atomicfile"}, m + "agent/atomicfile": nil},
			[]string{"the image builder never depends on the agent: " + m + "imagebuilder/bake depends on " + m + "agent/atomicfile"}},
		{"versioned API imports an implementation", map[string][]string{
			m + "agent/api/v1alpha1": {m + "agent/bootstrap", "k8s.io/apimachinery/pkg/util/validation/field"}, m + "agent/bootstrap": nil},
			[]string{"the versioned API depends on no implementation: " + m + "agent/api/v1alpha1 depends on " + m + "agent/bootstrap"}},
		{"versioned API imports the contract's token: allowed", map[string][]string{
			m + "agent/api/v1alpha1": {m + "internal/node/bootstraptoken"}, m + "internal/node/bootstraptoken": nil}, nil},
		{"a renderer reads the versioned API", map[string][]string{
			m + "agent/render": {m + "agent/api/v1alpha1"}, m + "agent/api/v1alpha1": nil},
			[]string{"phases and renderers read only the internal NodeConfig: " + m + "agent/render depends on " + m + "agent/api/v1alpha1"}},
		{"the join reaches the versioned API through the internal config", map[string][]string{
			m + "agent/join": {m + "agent/nodeconfig"}, m + "agent/nodeconfig": {m + "agent/api/v1alpha1"}, m + "agent/api/v1alpha1": nil},
			[]string{
				"phases and renderers read only the internal NodeConfig: " + m + "agent/join depends on " + m + "agent/api/v1alpha1",
				"phases and renderers read only the internal NodeConfig: " + m + "agent/nodeconfig depends on " + m + "agent/api/v1alpha1"}},
		{"cloud-init imports the agent", map[string][]string{
			m + "cloud-init": {m + "agent/bootstrap"}, m + "agent/bootstrap": nil},
			[]string{"the node contract depends on neither half: " + m + "cloud-init depends on " + m + "agent/bootstrap"}},
		{"product links testing through a helper", map[string][]string{
			m + "agent/join": {m + "agent/helper"}, m + "agent/helper": {"testing"}, "testing": nil},
			[]string{
				"no product package links testing: " + m + "agent/helper depends on testing",
				"no product package links testing: " + m + "agent/join links testing through " + m + "agent/helper"}},
		{"dev tool links testing through a dev package", map[string][]string{
			m + "cmd/berth-dev": {m + "internal/dev/vm"}, m + "internal/dev/vm": {"testing"}, "testing": nil},
			[]string{
				"no dev tool links testing: " + m + "cmd/berth-dev links testing through " + m + "internal/dev/vm",
				"no dev tool links testing: " + m + "internal/dev/vm depends on testing",
				"no product package links testing: " + m + "cmd/berth-dev links testing through " + m + "internal/dev/vm",
				"no product package links testing: " + m + "internal/dev/vm depends on testing"}},
		{"agent uses the dev environment", map[string][]string{
			m + "agent/join": {m + "internal/dev/proc"}, m + "internal/dev/proc": nil},
			[]string{"the agent and the image builder never depend on the dev environment: " + m + "agent/join depends on " + m + "internal/dev/proc"}},
		{"product imports test code", map[string][]string{
			m + "imagebuilder/bake": {m + "test/proc"}, m + "test/proc": nil},
			[]string{"the product never depends on test code: " + m + "imagebuilder/bake depends on " + m + "test/proc"}},
		{"third-party package importing testing is not counted", map[string][]string{
			m + "imagebuilder": {"github.com/hashicorp/packer-plugin-sdk/packer"}, "github.com/hashicorp/packer-plugin-sdk/packer": {"testing"}, "testing": nil}, nil},
		{"tests' helpers may link testing", map[string][]string{
			m + "test/node": {"testing"}, "testing": nil}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, v := range Check(graph(c.direct), Rules) {
				got = append(got, v.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("violations:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}
