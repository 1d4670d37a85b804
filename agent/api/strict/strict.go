// Package strict decodes one configuration document (YAML or JSON) into a Go type the way every berth config kind
// is read: strictly, reporting every unknown and duplicate field of the document in one pass (each with its path,
// duplicates with their line), refusing a second document, and cutting long values short in messages, which go to
// the journal. The kinds (NodeConfig, LoadBalancerConfig) validate the values themselves.
package strict

import (
	"bytes"
	"fmt"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Error lists every strictness problem of one document, each with where it is: duplicate keys (with their line)
// and unknown fields (with their path). Decode returns it together with the document, decoded as if the problems
// were not there, so that the caller can validate the values too and report everything in one pass.
type Error struct {
	Kind     string
	Problems []string
}

func (e *Error) Error() string { return "parse " + e.Kind + ": " + strings.Join(e.Problems, "; ") }

// Decode parses data into into (a pointer to the kind's type), strictly, and returns the document as JSON
// (duplicates resolved, the last one winning) for a caller that merges documents as they were written. Unknown and
// duplicate fields are an *Error with into filled in leniently; a syntax error, an empty document or a second
// document is an error with nothing decoded. kind names the document in messages.
func Decode(data []byte, kind string, into any) ([]byte, error) {
	if line := secondDocument(data); line > 0 {
		return nil, fmt.Errorf("parse %s: line %d: a second YAML document starts here; a %s is one document", kind, line, kind)
	}
	problems, err := duplicateKeys(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", kind, err)
	}
	js, err := yaml.YAMLToJSON(data) // duplicates are reported above; the last one wins here
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", kind, err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, fmt.Errorf("parse %s: empty document", kind)
	}
	unknown, err := sigsjson.UnmarshalStrict(js, into, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", kind, err)
	}
	for _, e := range unknown {
		problems = append(problems, e.Error())
	}
	if len(problems) > 0 {
		for i, p := range problems {
			problems[i] = Cut(p) // an unknown key may be megabytes long
		}
		return js, &Error{Kind: kind, Problems: problems}
	}
	return js, nil
}

// MaxShownValue bounds how much of a bad value a message shows: messages go to the journal, and a value may be
// megabytes long.
const MaxShownValue = 256

// Cut shortens s to MaxShownValue bytes, saying how long it was.
func Cut(s string) string {
	if len(s) <= MaxShownValue {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(s[:MaxShownValue], ""), len(s))
}

// CutValues shortens the long string bad values of errs (Cut).
func CutValues(errs field.ErrorList) field.ErrorList {
	for _, e := range errs {
		if v, ok := e.BadValue.(string); ok {
			e.BadValue = Cut(v)
		}
	}
	return errs
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

// TypeMeta is the problems with a document's apiVersion and kind: each must be the one the API defines.
func TypeMeta(apiVersion, kind, wantAPIVersion, wantKind string) field.ErrorList {
	var errs field.ErrorList
	if apiVersion != wantAPIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), apiVersion, []string{wantAPIVersion}))
	}
	if kind != wantKind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), kind, []string{wantKind}))
	}
	return errs
}
