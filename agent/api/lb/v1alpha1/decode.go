package v1alpha1

import "berth.dev/berth/agent/api/strict"

// Decode parses one LoadBalancerConfig from YAML or JSON, strictly: every unknown or duplicate field is reported
// (a *strict.Error, with the leniently decoded document). It does not validate; call Validate.
func Decode(data []byte) (*LoadBalancerConfig, error) {
	var c LoadBalancerConfig
	js, err := strict.Decode(data, Kind, &c)
	if js == nil {
		return nil, err
	}
	return &c, err
}
