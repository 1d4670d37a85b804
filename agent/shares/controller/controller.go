// Package controller is the CSI Controller service of berth's share drivers. CreateVolume makes one directory per
// volume on the share its StorageClass names (under the class's subDir, named for the volume: the
// PersistentVolume's name); DeleteVolume removes it, or archives or keeps it, as the class's onDelete says. The
// directories are made through Dirs (the share mounted in the controller's own mount namespace). A volume's ID
// carries what DeleteVolume is given nothing else to know by: the share, the directory and onDelete.
package controller

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"berth.dev/berth/agent/shares/mountopts"
	"berth.dev/berth/agent/shares/volume"
)

// StorageClass parameter keys (besides volume.KeySource and volume.KeySubDir, the base directory of the class's
// volumes on the share).
const (
	// KeyOnDelete is what DeleteVolume does with a volume's directory: delete (the default), retain, or archive
	// (renamed archived-<name>, as csi-driver-nfs does).
	KeyOnDelete = "onDelete"
)

// OnDelete values.
const (
	Delete  = "delete"
	Retain  = "retain"
	Archive = "archive"
)

// Dirs makes and removes directories on a share.
type Dirs interface {
	// Make creates dir (a clean path relative to the share's root) and its parents, mode 0777 (the pods'
	// fsGroup and the share's own permissions decide who writes); an existing directory is not an error.
	Make(ctx context.Context, share volume.Volume, creds volume.Credentials, dir string) error
	// Remove removes dir and everything in it; a missing directory is not an error.
	Remove(ctx context.Context, share volume.Volume, creds volume.Credentials, dir string) error
	// Rename renames dir to to (both relative to the share's root).
	Rename(ctx context.Context, share volume.Volume, creds volume.Credentials, dir, to string) error
}

// Server is the Controller service of one driver.
type Server struct {
	csi.UnimplementedControllerServer
	protocol mountopts.Protocol
	dirs     Dirs
}

// New returns the Controller service of the driver for protocol.
func New(protocol mountopts.Protocol, dirs Dirs) *Server {
	return &Server{protocol: protocol, dirs: dirs}
}

// ControllerGetCapabilities: volumes are created and deleted; nothing is attached.
func (s *Server) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{Type: &csi.ControllerServiceCapability_Rpc{
		Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}}}}}, nil
}

// name is what a volume's directory may be called: letters, digits, '-', '.' and '_', starting with a letter or a
// digit (never "." or ".."), as a PersistentVolume's name (what the provisioner gives) and the names other COs
// and csi-sanity give are. Anything else is refused rather than mapped, so a directory is always named as its
// volume.
var name = regexp.MustCompile(`^[A-Za-z0-9][-A-Za-z0-9._]{0,252}$`)

// CreateVolume makes the volume's directory and returns its ID and context (source and subDir, what the Node
// service mounts).
func (s *Server) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	var errs []error
	if !name.MatchString(req.GetName()) {
		errs = append(errs, fmt.Errorf("name: %q: want letters, digits, '-', '.' and '_', starting with a letter or a digit, at most 253", req.GetName()))
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		errs = append(errs, err)
	}
	if req.GetVolumeContentSource() != nil {
		errs = append(errs, errors.New("volume_content_source: snapshots and clones are not supported"))
	}
	params := map[string]string{}
	onDelete := Delete
	for k, v := range req.GetParameters() {
		switch {
		case k == KeyOnDelete:
			onDelete = v
			if v != Delete && v != Retain && v != Archive {
				errs = append(errs, fmt.Errorf("parameters.%s: %q: want %s, %s or %s", KeyOnDelete, v, Delete, Retain, Archive))
			}
		case k == volume.KeySource || k == volume.KeySubDir:
			params[k] = v
		case strings.HasPrefix(k, "csi.storage.k8s.io/"):
		default:
			errs = append(errs, fmt.Errorf("parameters.%s: unknown (want %s, %s, %s)", k, volume.KeySource, volume.KeySubDir, KeyOnDelete))
		}
	}
	share, err := volume.Parse(params)
	if err != nil {
		errs = append(errs, prefix("parameters.", err))
	} else if share.Protocol != s.protocol {
		errs = append(errs, fmt.Errorf("parameters.%s: %q is an %s share; this driver provisions %s shares", volume.KeySource, share.Source(), share.Protocol, s.protocol))
	}
	var creds volume.Credentials
	if err == nil {
		if creds, err = volume.ParseSecret(share.Protocol, req.GetSecrets()); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, status.Error(codes.InvalidArgument, errors.Join(errs...).Error())
	}
	dir := path.Join(share.SubDir, req.GetName())
	root := share
	root.SubDir = ""
	if err := s.dirs.Make(ctx, root, creds, dir); err != nil {
		return nil, status.Errorf(codeOf(err), "make %s on %s: %v", dir, share.Source(), err)
	}
	id := url.Values{volume.KeySource: {share.Source()}, volume.KeySubDir: {dir}, KeyOnDelete: {onDelete}}.Encode()
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: id, CapacityBytes: req.GetCapacityRange().GetRequiredBytes(),
		VolumeContext: map[string]string{volume.KeySource: share.Source(), volume.KeySubDir: dir}}}, nil
}

// DeleteVolume removes, archives or keeps the volume's directory; a volume already gone is not an error, and
// neither is an ID this driver never made (the CSI spec: a volume that does not exist is deleted).
func (s *Server) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id: required")
	}
	share, onDelete, err := parseID(req.GetVolumeId())
	if err != nil || share.Protocol != s.protocol {
		return &csi.DeleteVolumeResponse{}, nil
	}
	if onDelete == Retain {
		return &csi.DeleteVolumeResponse{}, nil
	}
	creds, err := volume.ParseSecret(share.Protocol, req.GetSecrets())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	dir := share.SubDir
	share.SubDir = ""
	switch onDelete {
	case Archive:
		to := path.Join(path.Dir(dir), "archived-"+path.Base(dir))
		err = s.dirs.Rename(ctx, share, creds, dir, to)
	default:
		err = s.dirs.Remove(ctx, share, creds, dir)
	}
	if err != nil {
		return nil, status.Errorf(codeOf(err), "%s %s on %s: %v", onDelete, dir, share.Source(), err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms file-system access in every mode (a share is read and written from any
// number of nodes).
func (s *Server) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" || len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_id and volume_capabilities: required")
	}
	if share, _, err := parseID(req.GetVolumeId()); err != nil || share.Protocol != s.protocol {
		return nil, status.Errorf(codes.NotFound, "volume_id: %q: not a volume of this driver", req.GetVolumeId())
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters()}}, nil
}

func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return errors.New("volume_capabilities: required")
	}
	for i, c := range caps {
		if c.GetMount() == nil {
			return fmt.Errorf("volume_capabilities[%d]: a share is a file system: block access is not supported", i)
		}
		if c.GetAccessMode() == nil || c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
			return fmt.Errorf("volume_capabilities[%d].access_mode: required", i)
		}
	}
	return nil
}

// parseID reads a volume ID CreateVolume made: the share with the volume's directory as SubDir, and onDelete.
func parseID(id string) (volume.Volume, string, error) {
	q, err := url.ParseQuery(id)
	if err != nil || len(q[volume.KeySource]) != 1 || len(q[volume.KeySubDir]) != 1 || len(q[KeyOnDelete]) != 1 {
		return volume.Volume{}, "", fmt.Errorf("volume_id: %q: not a volume of this driver", id)
	}
	v, err := volume.Parse(map[string]string{volume.KeySource: q.Get(volume.KeySource), volume.KeySubDir: q.Get(volume.KeySubDir)})
	if err != nil || v.SubDir == "" {
		return volume.Volume{}, "", fmt.Errorf("volume_id: %q: not a volume of this driver (%v)", id, err)
	}
	switch od := q.Get(KeyOnDelete); od {
	case Delete, Retain, Archive:
		return v, od, nil
	default:
		return volume.Volume{}, "", fmt.Errorf("volume_id: %q: onDelete %q", id, od)
	}
}

// prefix puts p before every line of err (volume.Parse names its keys bare).
func prefix(p string, err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = p + l
	}
	return errors.New(strings.Join(lines, "\n"))
}

// codeOf is the code of a failure to make or remove a directory: the context's end is its own (the share did not
// answer in time; the directory may still come), anything else Internal.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Internal
}
