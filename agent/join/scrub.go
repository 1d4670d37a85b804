package join

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	"berth.dev/berth/internal/node/atomicfile"
)

// scrubProblem is a drop-in the scrub could not read, parse or rewrite.
type scrubProblem struct {
	path string
	err  error
}

// scrubTokens removes spec.controlPlane.discovery.token from every drop-in that has one, keeping the rest of the
// file (comments included) and its mode. A .json drop-in comes back as YAML, which the loader reads the same. The
// merged config stays valid: a joined node needs no token. Hidden files are skipped, as the config loader skips
// them. A drop-in it cannot handle is reported and the others are still scrubbed.
func scrubTokens(dir string) (scrubbed []string, problems []scrubProblem) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, []scrubProblem{{dir, err}}
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		changed, err := scrubFile(p)
		if err != nil {
			problems = append(problems, scrubProblem{p, err})
		} else if changed {
			scrubbed = append(scrubbed, p)
		}
	}
	return scrubbed, problems
}

// scrubFile removes the token from the drop-in at p; changed is false when it holds none.
func scrubFile(p string) (changed bool, err error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return false, err
	}
	out, changed, err := scrubToken(data)
	if err != nil || !changed {
		return false, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return false, err
	}
	return true, atomicfile.Write(p, out, fi.Mode().Perm())
}

func scrubToken(data []byte) ([]byte, bool, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, false, err
	}
	if len(doc.Content) == 0 {
		return data, false, nil
	}
	m := doc.Content[0]
	for _, key := range []string{"spec", "controlPlane", "discovery"} {
		if m = child(m, key); m == nil {
			return data, false, nil
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "token" {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			var b bytes.Buffer
			enc := yaml.NewEncoder(&b)
			enc.SetIndent(2)
			if err := enc.Encode(&doc); err != nil {
				return nil, false, err
			}
			return b.Bytes(), true, nil
		}
	}
	return data, false, nil
}

func child(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
