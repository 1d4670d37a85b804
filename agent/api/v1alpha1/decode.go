package v1alpha1

import (
	"bytes"
	"fmt"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// StrictError lists every strictness problem of one document, each with where it is: duplicate keys (with their
// line) and unknown fields (with their path). Decode returns it together with the document, decoded as if the
// problems were not there, so that the caller can validate the values too and report everything in one pass.
type StrictError struct {
	Problems []string
}

func (e *StrictError) Error() string { return "parse NodeConfig: " + strings.Join(e.Problems, "; ") }

// Decode parses one NodeConfig from YAML or JSON, strictly: every unknown or duplicate field is reported (a
// *StrictError, with the leniently decoded document). A syntax error, an empty document or a second document is
// an error without a document. It does not validate; call Validate.
func Decode(data []byte) (*NodeConfig, error) {
	c, _, err := DecodeJSON(data)
	return c, err
}

// DecodeJSON is Decode that also returns the document as JSON (duplicates resolved, the last one winning), for a
// caller that merges documents as they were written (config's merge patches): the YAML is parsed once.
func DecodeJSON(data []byte) (*NodeConfig, []byte, error) {
	if line := secondDocument(data); line > 0 {
		return nil, nil, fmt.Errorf("parse NodeConfig: line %d: a second YAML document starts here; a NodeConfig is one document", line)
	}
	problems, err := duplicateKeys(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parse NodeConfig: %w", err)
	}
	js, err := yaml.YAMLToJSON(data) // duplicates are reported above; the last one wins here
	if err != nil {
		return nil, nil, fmt.Errorf("parse NodeConfig: %w", err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil, fmt.Errorf("parse NodeConfig: empty document")
	}
	var c NodeConfig
	strict, err := sigsjson.UnmarshalStrict(js, &c, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, nil, fmt.Errorf("parse NodeConfig: %w", err)
	}
	for _, e := range strict {
		problems = append(problems, e.Error())
	}
	if len(problems) > 0 {
		for i, p := range problems {
			problems[i] = cutString(p) // an unknown key may be megabytes long
		}
		return &c, js, &StrictError{Problems: problems}
	}
	return &c, js, nil
}

// duplicateKeys returns every key that repeats within one mapping, with its line and path; err is a syntax error.
func duplicateKeys(data []byte) ([]string, error) {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	var out []string
	var walk func(n *yamlv3.Node, path string)
	walk = func(n *yamlv3.Node, path string) {
		switch n.Kind {
		case yamlv3.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yamlv3.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		case yamlv3.MappingNode:
			seen := map[string]bool{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				if seen[k.Value] {
					out = append(out, fmt.Sprintf("line %d: duplicate field %q", k.Line, p))
				}
				seen[k.Value] = true
				walk(n.Content[i+1], p)
			}
		}
	}
	walk(&doc, "")
	return out, nil
}

// secondDocument returns the line (from 1) of a document marker ("---" at the start of a line) that follows
// content, or 0 when data is one document. The YAML decoder reads only the first document and ignores the rest, so
// a valid NodeConfig followed by garbage, or by a second NodeConfig whose token the scrub would miss, must be
// refused here. A marker before any content (an explicit start of the one document) is fine.
func secondDocument(data []byte) int {
	content := false
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "---" || strings.HasPrefix(line, "--- ") || strings.HasPrefix(line, "---\t") {
			if content {
				return i + 1
			}
			continue
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
	}
	return 0
}
