// Package node is the CSI Node service of berth's share driver. NodeStageVolume mounts a share once per
// (source, options, credentials) under the state directory, as a systemd mount unit (Mounts), and binds the
// volume's directory of it to the kubelet's staging path; NodePublishVolume binds the staging path into the pod
// (read-only when asked). Every call is idempotent; unstaging the last volume of a share unmounts the share. SMB
// credentials go to a 0600 file on tmpfs, named in the options as credentials=, and are deleted once the mount
// is made: they are never on a command line, in a unit's properties or in a log. What is staged is recorded in
// state.json (written atomically), so an agent restarted between calls carries on.
package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"berth.dev/berth/agent/shares/health"
	"berth.dev/berth/agent/shares/mounter"
	"berth.dev/berth/agent/shares/mountopts"
	"berth.dev/berth/agent/shares/volume"
	"berth.dev/berth/internal/node/atomicfile"
)

// Mounts mount shares (mounter.Mounter: systemd mount units).
type Mounts interface {
	Mount(ctx context.Context, m mounter.Mount) error
	Unmount(ctx context.Context, where string) error
	// Forget waits for a mount detached under it to be gone from the system's view (Heal).
	Forget(ctx context.Context, where string) error
}

// Binds bind-mount directories (the staging and publish paths).
type Binds interface {
	Bind(ctx context.Context, src, dst string, readOnly bool) error
	Unbind(ctx context.Context, dst string) error
	IsMounted(dst string) (bool, error)
	// Detach drops a mount at once, lazily: a dead share must not hold its healing up.
	Detach(ctx context.Context, dst string) error
}

// Config is the Node service's setup.
type Config struct {
	// Protocol is the driver's: berth registers one driver per protocol, since their fsGroup handling differs
	// (CSIDriver fsGroupPolicy File for both; SMB takes the pod's fsGroup as gid= (VOLUME_MOUNT_GROUP), the
	// kubelet cannot chown on cifs; NFS leaves it to the kubelet, which chowns the volume).
	Protocol mountopts.Protocol
	NodeID   string
	// StateDir holds the share mounts (mounts/<key>) and state.json.
	StateDir string
	// CredDir is where SMB credential files live while a mount is made: tmpfs (/run/berth/shares).
	CredDir string
	// Root prefixes every path the service creates or removes itself (tests point it at a container's root);
	// paths given to Mounts and Binds are the node's.
	Root string
	// MountTimeout bounds a share's mount helper (default 60 s).
	MountTimeout time.Duration
	Log          *slog.Logger
}

// Server is the Node service.
type Server struct {
	csi.UnimplementedNodeServer
	cfg    Config
	mounts Mounts
	binds  Binds
	mu     sync.Mutex // one call at a time: the state is read, changed and saved whole
	// creds are the SMB credentials each share was last mounted with, by key, so that Heal can mount it again.
	// Memory only: after a restart of the agent a share's credentials are known again at its next stage.
	creds map[string]volume.Credentials
}

// New returns the Node service.
func New(cfg Config, mounts Mounts, binds Binds) *Server {
	if cfg.MountTimeout == 0 {
		cfg.MountTimeout = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, mounts: mounts, binds: binds, creds: map[string]volume.Credentials{}}
}

// State is what is staged, in state.json.
type State struct {
	Version int `json:"version"`
	// Shares by key: one mount each.
	Shares map[string]*Share `json:"shares"`
	// Volumes by volume ID.
	Volumes map[string]*Staged `json:"volumes"`
}

// Share is one mounted share.
type Share struct {
	Source  string   `json:"source"`
	Type    string   `json:"type"`
	Options []string `json:"options"` // without the credentials file
	Where   string   `json:"where"`
}

// Staged is one staged volume.
type Staged struct {
	Share   string `json:"share"` // its key
	SubDir  string `json:"subDir,omitempty"`
	Staging string `json:"staging"`
	// PV is the volume's PersistentVolume, from the kubelet's publish path (kubernetes.io~csi/<pv>/mount): where
	// the Secret of its credentials is found (its nodeStageSecretRef).
	PV string `json:"pv,omitempty"`
	// Secret is the Secret its share's credentials come from, once found (SetSecret): a change of it re-stages
	// the volume (Rotate).
	Secret *SecretRef `json:"secret,omitempty"`
}

const stateVersion = 1

func (s *Server) path(p string) string { return filepath.Join(s.cfg.Root, p) }

func (s *Server) load() (*State, error) {
	st := &State{Version: stateVersion, Shares: map[string]*Share{}, Volumes: map[string]*Staged{}}
	data, err := os.ReadFile(s.path(filepath.Join(s.cfg.StateDir, "state.json")))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(s.cfg.StateDir, "state.json"), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s: version %d, want %d", filepath.Join(s.cfg.StateDir, "state.json"), st.Version, stateVersion)
	}
	return st, nil
}

// lockState takes the service's lock (one call at a time: the state is read, changed and saved whole) and reads
// the state; unlock lets go.
func (s *Server) lockState() (st *State, unlock func(), err error) {
	s.mu.Lock()
	if st, err = s.load(); err != nil {
		s.mu.Unlock()
		return nil, nil, status.Error(codes.Internal, err.Error())
	}
	return st, s.mu.Unlock, nil
}

func (s *Server) save(st *State) error {
	data, _ := json.MarshalIndent(st, "", "  ")
	if err := os.MkdirAll(s.path(s.cfg.StateDir), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(s.path(filepath.Join(s.cfg.StateDir, "state.json")), append(data, '\n'), 0o600)
}

// NodeGetCapabilities: stage/unstage; for SMB also the pod's fsGroup handed to the driver (VOLUME_MOUNT_GROUP),
// which the mount applies as gid (the kubelet cannot chown files on cifs).
func (s *Server) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	types := []csi.NodeServiceCapability_RPC_Type{csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME}
	if s.cfg.Protocol == mountopts.SMB {
		types = append(types, csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP)
	}
	for _, c := range types {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo names the node.
func (s *Server) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.cfg.NodeID}, nil
}

// request is a stage request, checked.
type request struct {
	vol     volume.Volume
	creds   volume.Credentials
	options []string
	key     string
}

func checkStage(protocol mountopts.Protocol, req *csi.NodeStageVolumeRequest) (request, error) {
	var errs []error
	if req.GetVolumeId() == "" {
		errs = append(errs, errors.New("volume_id: required"))
	}
	if p := req.GetStagingTargetPath(); p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p {
		errs = append(errs, fmt.Errorf("staging_target_path: %q: want an absolute, clean path", p))
	}
	capability := req.GetVolumeCapability()
	if capability == nil {
		errs = append(errs, errors.New("volume_capability: required"))
	} else if capability.GetMount() == nil {
		errs = append(errs, errors.New("volume_capability: a share is a file system: block access is not supported"))
	}
	vol, err := volume.Parse(req.GetVolumeContext())
	if err != nil {
		errs = append(errs, fmt.Errorf("volume context: %w", err))
	}
	if err == nil && vol.Protocol != protocol {
		err = fmt.Errorf("volume context: source: %q is an %s share; this driver mounts %s shares (use the %s driver)", vol.Source(), vol.Protocol, protocol, vol.Protocol)
		errs = append(errs, err)
	}
	var r request
	if err == nil {
		r.vol = vol
		if r.creds, err = volume.ParseSecret(vol.Protocol, req.GetSecrets()); err != nil {
			errs = append(errs, err)
		}
		mr := mountopts.Request{Protocol: vol.Protocol, Options: capability.GetMount().GetMountFlags()}
		if g := capability.GetMount().GetVolumeMountGroup(); g != "" {
			n, err := strconv.ParseInt(g, 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("volume_capability.mount.volume_mount_group: %q is not a group ID", g))
			}
			mr.FSGroup = &n
		}
		if r.options, err = mountopts.Build(mr); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return r, status.Error(codes.InvalidArgument, errors.Join(errs...).Error())
	}
	if r.vol.Protocol == mountopts.SMB && r.creds.Username == "" && !noPassword(r.options) {
		r.options = append(r.options, "guest")
	}
	r.key = shareKey(r.vol.Protocol, r.vol.Source(), r.options, r.creds)
	return r, nil
}

// shareKey names a share's mount: one for each protocol, source, options and credentials (the password's hash
// only, so that the key, which names the mount point, says nothing of it).
func shareKey(p mountopts.Protocol, source string, options []string, creds volume.Credentials) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00", p, source, strings.Join(options, ","), creds.Username, creds.Domain)
	pw := sha256.Sum256([]byte(creds.Password))
	h.Write(pw[:])
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// NodeStageVolume mounts the volume's share (once for every volume of the same share, options and credentials)
// and binds the volume's directory of it to the staging path.
func (s *Server) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	r, err := checkStage(s.cfg.Protocol, req)
	if err != nil {
		return nil, err
	}
	st, unlock, err := s.lockState()
	if err != nil {
		return nil, err
	}
	defer unlock()
	staging := req.GetStagingTargetPath()
	if v, ok := st.Volumes[req.GetVolumeId()]; ok && v.Staging == staging && v.Share == r.key {
		if mounted, err := s.binds.IsMounted(staging); err == nil && mounted {
			return &csi.NodeStageVolumeResponse{}, nil
		}
	}
	sh, err := s.shareMount(ctx, st, r)
	if err != nil {
		return nil, err
	}
	src := sh.Where
	if r.vol.SubDir != "" {
		src = filepath.Join(sh.Where, r.vol.SubDir)
		if fi, err := os.Stat(s.path(src)); err != nil || !fi.IsDir() {
			s.releaseShare(ctx, st, r.key)
			return nil, status.Errorf(codes.NotFound, "subDir %q: not a directory on %s (%v)", r.vol.SubDir, sh.Source, err)
		}
	}
	if err := os.MkdirAll(s.path(staging), 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := s.binds.Bind(ctx, src, staging, false); err != nil {
		s.releaseShare(ctx, st, r.key)
		return nil, status.Errorf(codes.Internal, "bind %s to %s: %v", src, staging, err)
	}
	st.Volumes[req.GetVolumeId()] = &Staged{Share: r.key, SubDir: r.vol.SubDir, Staging: staging}
	if err := s.save(st); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.cfg.Log.Info("staged", "volume", req.GetVolumeId(), "share", sh.Source, "subDir", r.vol.SubDir, "staging", staging)
	return &csi.NodeStageVolumeResponse{}, nil
}

// shareMount returns the share's mount, mounting it if it is not mounted.
func (s *Server) shareMount(ctx context.Context, st *State, r request) (*Share, error) {
	where := filepath.Join(s.cfg.StateDir, "mounts", r.key)
	// NFS mounts as type nfs: its nfsvers= picks the version (mount.nfs4 would refuse a volume's nfsvers=3).
	sh := &Share{Source: r.vol.Source(), Type: map[mountopts.Protocol]string{mountopts.SMB: "cifs", mountopts.NFS: "nfs"}[r.vol.Protocol],
		Options: r.options, Where: where}
	if err := s.mount(ctx, r.key, sh, r.creds); err != nil {
		os.Remove(s.path(where))
		return nil, status.Errorf(codes.Internal, "mount %s: %v", sh.Source, err)
	}
	st.Shares[r.key] = sh
	return sh, nil
}

// mount mounts share key (SMB: with creds, through a credentials file deleted after) and remembers the creds.
func (s *Server) mount(ctx context.Context, key string, sh *Share, creds volume.Credentials) error {
	if err := os.MkdirAll(s.path(sh.Where), 0o750); err != nil {
		return err
	}
	options := slices.Clone(sh.Options)
	if creds.Username != "" {
		file, err := s.writeCredentials(key, creds)
		if err != nil {
			return err
		}
		defer os.Remove(s.path(file))
		options = append(options, "credentials="+file)
	}
	if err := s.mounts.Mount(ctx, mounter.Mount{What: sh.Source, Where: sh.Where, Type: sh.Type, Options: options, Timeout: s.cfg.MountTimeout}); err != nil {
		return err
	}
	s.creds[key] = creds
	return nil
}

// writeCredentials writes the SMB credentials file (0600, on tmpfs) and returns its node path.
func (s *Server) writeCredentials(key string, creds volume.Credentials) (string, error) {
	file := filepath.Join(s.cfg.CredDir, key+".cred")
	if err := os.MkdirAll(s.path(s.cfg.CredDir), 0o700); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "username=%s\npassword=%s\n", creds.Username, string(creds.Password))
	if creds.Domain != "" {
		fmt.Fprintf(&b, "domain=%s\n", creds.Domain)
	}
	return file, atomicfile.Write(s.path(file), []byte(b.String()), 0o600)
}

// releaseShare unmounts a share no staged volume uses.
func (s *Server) releaseShare(ctx context.Context, st *State, key string) error {
	for _, v := range st.Volumes {
		if v.Share == key {
			return nil
		}
	}
	sh, ok := st.Shares[key]
	where := filepath.Join(s.cfg.StateDir, "mounts", key)
	if ok {
		where = sh.Where
	}
	if err := s.mounts.Unmount(ctx, where); err != nil {
		return err
	}
	delete(st.Shares, key)
	delete(s.creds, key)
	if err := os.Remove(s.path(where)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// NodeUnstageVolume unbinds the staging path and unmounts the share if no other volume uses it.
func (s *Server) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if req.GetVolumeId() == "" || req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id and staging_target_path: required")
	}
	st, unlock, err := s.lockState()
	if err != nil {
		return nil, err
	}
	defer unlock()
	staging := req.GetStagingTargetPath()
	if err := s.unbind(ctx, staging); err != nil {
		return nil, err
	}
	v, ok := st.Volumes[req.GetVolumeId()]
	if ok {
		delete(st.Volumes, req.GetVolumeId())
		if err := s.releaseShare(ctx, st, v.Share); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount the share: %v", err)
		}
		if err := s.save(st); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	s.cfg.Log.Info("unstaged", "volume", req.GetVolumeId(), "staging", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// unbind unmounts a bind at path if there is one; nothing there is not an error.
func (s *Server) unbind(ctx context.Context, path string) error {
	mounted, err := s.binds.IsMounted(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return status.Error(codes.Internal, err.Error())
	}
	if mounted {
		if err := s.binds.Unbind(ctx, path); err != nil {
			return status.Errorf(codes.Internal, "unmount %s: %v", path, err)
		}
	}
	return nil
}

// NodePublishVolume binds the staging path into the pod, read-only when asked.
func (s *Server) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target, staging := req.GetTargetPath(), req.GetStagingTargetPath()
	if req.GetVolumeId() == "" || target == "" || staging == "" || req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume_id, target_path, staging_target_path and volume_capability: required")
	}
	if req.GetVolumeCapability().GetMount() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume_capability: a share is a file system: block access is not supported")
	}
	st, unlock, err := s.lockState()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if v, ok := st.Volumes[req.GetVolumeId()]; !ok || v.Staging != staging {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", req.GetVolumeId(), staging)
	}
	if mounted, err := s.binds.IsMounted(target); err == nil && mounted {
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := os.MkdirAll(s.path(target), 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	mode := req.GetVolumeCapability().GetAccessMode().GetMode()
	ro := req.GetReadonly() || mode == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY || mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	if err := s.binds.Bind(ctx, staging, target, ro); err != nil {
		return nil, status.Errorf(codes.Internal, "bind %s to %s: %v", staging, target, err)
	}
	if v := st.Volumes[req.GetVolumeId()]; v.PV == "" {
		if v.PV = pvOfTarget(target); v.PV != "" {
			if err := s.save(st); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
		}
	}
	s.cfg.Log.Info("published", "volume", req.GetVolumeId(), "target", target, "readOnly", ro)
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unbinds the pod's path and removes it.
func (s *Server) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id and target_path: required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.unbind(ctx, target); err != nil {
		return nil, err
	}
	if err := os.Remove(s.path(target)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.cfg.Log.Info("unpublished", "volume", req.GetVolumeId(), "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// Shares are the mounted shares, for the health loop: key and mount point (the node's path).
func (s *Server) Shares() ([]health.Target, error) {
	st, unlock, err := s.lockState()
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := make([]health.Target, 0, len(st.Shares))
	for key, sh := range st.Shares {
		out = append(out, health.Target{Key: key, Path: sh.Where})
	}
	slices.SortFunc(out, func(a, b health.Target) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Heal mounts a dead share again: its mount is detached (lazily: a hung server cannot hold this up), the
// share mounted anew at the same path (SMB with the credentials of its last stage), and every volume staged from
// it bound again, so that pods started from now on get a live share. Running pods keep the mount they started with:
// their containers hold it in their own mount namespaces, where only the kernel's own reconnection reaches it.
// After an agent restart an SMB share's credentials are unknown until a stage gives them again; Heal says so.
func (s *Server) Heal(ctx context.Context, key string) error {
	st, unlock, err := s.lockState()
	if err != nil {
		return err
	}
	defer unlock()
	sh, ok := st.Shares[key]
	if !ok {
		return nil // unstaged meanwhile
	}
	creds, known := s.creds[key]
	if !known && noPassword(sh.Options) {
		known = true // a guest mount needs none
	}
	if !known && sh.Type == "cifs" {
		return fmt.Errorf("share %s: its credentials are not known since the agent restarted; the next stage of one of its volumes gives them", sh.Source)
	}
	if err := s.binds.Detach(ctx, sh.Where); err != nil {
		return fmt.Errorf("detach %s: %w", sh.Where, err)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = s.mounts.Forget(fctx, sh.Where)
	cancel()
	if err != nil {
		return err
	}
	if err := s.mount(ctx, key, sh, creds); err != nil {
		return fmt.Errorf("mount %s again: %w", sh.Source, err)
	}
	var errs []error
	for id, v := range st.Volumes {
		if v.Share == key {
			errs = append(errs, s.rebind(ctx, id, v, sh))
		}
	}
	return errors.Join(errs...)
}

// rebind binds volume id's directory of share sh to its staging path in place of what is there (detached at once:
// a dead share cannot hold it up; the pods' own binds of the old one stay as they are).
func (s *Server) rebind(ctx context.Context, id string, v *Staged, sh *Share) error {
	src := sh.Where
	if v.SubDir != "" {
		src = filepath.Join(sh.Where, v.SubDir)
	}
	if err := s.binds.Detach(ctx, v.Staging); err != nil {
		return fmt.Errorf("volume %s: detach %s: %w", id, v.Staging, err)
	}
	if err := s.binds.Bind(ctx, src, v.Staging, false); err != nil {
		return fmt.Errorf("volume %s: bind %s to %s: %w", id, src, v.Staging, err)
	}
	return nil
}
