// Package mergepatch merges decoded documents the RFC 7386 way: objects merge key by key, a null deletes the key,
// anything else (including a list) replaces. NodeConfig drop-ins, the partial KubeletConfiguration and the user's
// containerd TOML all merge with these rules, so one rule set is documented for all of them.
package mergepatch

// Apply applies patch to target and returns the result; target may be nil. Maps in target are modified in place.
func Apply(target, patch map[string]any) map[string]any {
	if target == nil {
		target = map[string]any{}
	}
	for k, v := range patch {
		if v == nil {
			delete(target, k)
			continue
		}
		if pm, ok := v.(map[string]any); ok {
			tm, _ := target[k].(map[string]any)
			target[k] = Apply(tm, pm)
			continue
		}
		target[k] = v
	}
	return target
}
