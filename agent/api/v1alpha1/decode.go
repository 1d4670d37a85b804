package v1alpha1

import (
	"berth.dev/berth/agent/api/strict"
)

// StrictError lists every strictness problem of one document (strict.Error): Decode returns it together with the
// document, so that the caller can validate the values too and report everything in one pass.
type StrictError = strict.Error

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
	var c NodeConfig
	js, err := strict.Decode(data, Kind, &c)
	if js == nil {
		return nil, nil, err
	}
	return &c, js, err
}
