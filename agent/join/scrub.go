package join

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	yaml "go.yaml.in/yaml/v3"

	"berth.dev/berth/internal/node/atomicfile"
)

// scrubTokens removes spec.controlPlane.discovery.token from every drop-in that has one, keeping the rest of the
// file (comments included) and its mode. A .json drop-in comes back as YAML, which the loader reads the same. The merged config stays valid: a joined node needs no token.
func scrubTokens(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var scrubbed []string
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			return scrubbed, err
		}
		out, changed, err := scrubToken(data)
		if err != nil {
			return scrubbed, fmt.Errorf("remove the token from %s: %w", p, err)
		}
		if !changed {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return scrubbed, err
		}
		if err := atomicfile.Write(p, out, fi.Mode().Perm()); err != nil {
			return scrubbed, err
		}
		scrubbed = append(scrubbed, p)
	}
	return scrubbed, nil
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
