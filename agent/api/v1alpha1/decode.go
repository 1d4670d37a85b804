package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Decode parses one NodeConfig from YAML or JSON, strictly: an unknown or duplicate field is an error naming it.
// It does not validate; call Validate.
func Decode(data []byte) (*NodeConfig, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parse NodeConfig: %w", err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, fmt.Errorf("parse NodeConfig: empty document")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var c NodeConfig
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parse NodeConfig: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("parse NodeConfig: trailing data after the document")
	}
	return &c, nil
}
