package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"berth.dev/berth/agent/shares/volume"
)

// SecretRef names the Secret a volume's share credentials come from: its PersistentVolume's nodeStageSecretRef.
type SecretRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r SecretRef) String() string { return r.Namespace + "/" + r.Name }

// SecretUse is a staged volume whose share was mounted with credentials (SMB, not as a guest), for the watch of
// Secrets (agent/shares/secretwatch): PV is its PersistentVolume once published ("" before), Secret the Secret
// its credentials come from once found (nil before).
type SecretUse struct {
	VolumeID string
	PV       string
	Secret   *SecretRef
}

// SecretUses lists the staged volumes whose shares were mounted with credentials, by volume ID.
func (s *Server) SecretUses() ([]SecretUse, error) {
	st, unlock, err := s.lockState()
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []SecretUse
	for _, id := range slices.Sorted(maps.Keys(st.Volumes)) {
		v := st.Volumes[id]
		if sh, ok := st.Shares[v.Share]; ok && authenticated(sh) {
			out = append(out, SecretUse{VolumeID: id, PV: v.PV, Secret: v.Secret})
		}
	}
	return out, nil
}

// authenticated says whether a share is mounted with credentials (SMB, not as a guest).
func authenticated(sh *Share) bool {
	return sh.Type == "cifs" && !noPassword(sh.Options)
}

// noPassword says whether SMB mount options mount without a password (as a guest, or with a sec= of their own).
func noPassword(options []string) bool {
	return slices.ContainsFunc(options, func(o string) bool { return o == "guest" || strings.HasPrefix(o, "sec=") })
}

// SetSecret records the Secret volume id's credentials come from; a volume no longer staged is not an error.
func (s *Server) SetSecret(id string, ref SecretRef) error {
	st, unlock, err := s.lockState()
	if err != nil {
		return err
	}
	defer unlock()
	v, ok := st.Volumes[id]
	if !ok || (v.Secret != nil && *v.Secret == ref) {
		return nil
	}
	v.Secret = &ref
	return s.save(st)
}

// Rotate takes the Secret ref's content (now) for the volumes whose credentials come from it. A share mounted
// with the same credentials only has them known again (after an agent restart, Heal needs them). A share mounted
// with others is mounted anew with these (a new key: the same source and options) and each of those volumes is
// re-staged on it, so that the pods started from now on use the new credentials; the running pods keep the mount
// they started with, and the old share mount goes once no staged volume uses it. It returns the IDs of the
// volumes re-staged. A Secret that does not parse changes nothing.
func (s *Server) Rotate(ctx context.Context, ref SecretRef, data map[string]string) ([]string, error) {
	creds, err := volume.ParseSecret(s.cfg.Protocol, data)
	if err != nil {
		return nil, fmt.Errorf("the Secret %s: %w", ref, err)
	}
	st, unlock, err := s.lockState()
	if err != nil {
		return nil, err
	}
	defer unlock()
	byShare := map[string][]string{}
	for _, id := range slices.Sorted(maps.Keys(st.Volumes)) {
		if v := st.Volumes[id]; v.Secret != nil && *v.Secret == ref {
			byShare[v.Share] = append(byShare[v.Share], id)
		}
	}
	var restaged []string
	var errs []error
	for _, old := range slices.Sorted(maps.Keys(byShare)) {
		sh, ok := st.Shares[old]
		if !ok || !authenticated(sh) {
			continue
		}
		key := shareKey(s.cfg.Protocol, sh.Source, sh.Options, creds)
		if key == old {
			s.creds[old] = creds
			continue
		}
		nsh, ok := st.Shares[key]
		if !ok {
			nsh = &Share{Source: sh.Source, Type: sh.Type, Options: slices.Clone(sh.Options), Where: filepath.Join(s.cfg.StateDir, "mounts", key)}
			if err := s.mount(ctx, key, nsh, creds); err != nil {
				errs = append(errs, fmt.Errorf("mount %s with Secret %s: %w", sh.Source, ref, err))
				continue
			}
			st.Shares[key] = nsh
		}
		for _, id := range byShare[old] {
			v := st.Volumes[id]
			if err := s.rebind(ctx, id, v, nsh); err != nil {
				errs = append(errs, err)
				continue
			}
			v.Share = key
			restaged = append(restaged, id)
		}
		if err := s.save(st); err != nil {
			return restaged, err
		}
		if err := s.releaseShare(ctx, st, old); err != nil {
			errs = append(errs, fmt.Errorf("unmount the share %s mounted with the old credentials: %w", sh.Source, err))
		}
		if err := s.save(st); err != nil {
			return restaged, err
		}
		s.cfg.Log.Info("re-staged with a changed Secret", "secret", ref.String(), "share", sh.Source, "volumes", byShare[old])
	}
	return restaged, errors.Join(errs...)
}

// pvOfTarget is the PersistentVolume name in a kubelet publish path (…/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount),
// or "" for another path.
func pvOfTarget(target string) string {
	dir, base := filepath.Split(filepath.Clean(target))
	if base != "mount" {
		return ""
	}
	pvDir := filepath.Dir(dir)
	if filepath.Base(filepath.Dir(pvDir)) != "kubernetes.io~csi" {
		return ""
	}
	return filepath.Base(pvDir)
}
