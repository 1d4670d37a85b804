package v1alpha1

import "berth.dev/berth/agent/api/strict"

// Decode parses one LogShipperConfig from YAML or JSON, strictly: every unknown or duplicate field is reported
// (a *strict.Error, with the leniently decoded document). It does not validate; call Validate.
func Decode(data []byte) (*LogShipperConfig, error) {
	var c LogShipperConfig
	js, err := strict.Decode(data, Kind, &c)
	if js == nil {
		return nil, err
	}
	return &c, err
}
