// Package plugin serves berth's share driver to the kubelet: the CSI Identity and Node services on the driver's
// socket, and the kubelet's plugin registration (pluginregistration/v1) on a socket in its plugins_registry
// directory, which the kubelet's plugin watcher finds; so no node-driver-registrar sidecar is needed. Calls are
// logged by method, volume and result only: a request may carry a Secret.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Version is the drivers' vendor version.
const Version = "0.1.0"

// The drivers' names, as CSIDriver objects, StorageClasses and PersistentVolumes name them: one per protocol (see
// node.Config.Protocol).
const (
	SMB = "smb.shares.berth.dev"
	NFS = "nfs.shares.berth.dev"
)

// Config is where the plugin listens.
type Config struct {
	Name, Version string
	// Socket is the CSI endpoint: /var/lib/kubelet/plugins/<name>/csi.sock.
	Socket string
	// RegistrationSocket is in the kubelet's plugins_registry: /var/lib/kubelet/plugins_registry/<name>-reg.sock.
	// Empty: no registration (a test that calls the CSI socket itself).
	RegistrationSocket string
	// Controller, if set, is served beside the Node service (CreateVolume and DeleteVolume), and the Identity
	// service says so.
	Controller csi.ControllerServer
	Log        *slog.Logger
}

// Serve serves node (and the Identity service) until ctx ends.
func Serve(ctx context.Context, cfg Config, node csi.NodeServer) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	csiLn, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	csiSrv := grpc.NewServer(grpc.UnaryInterceptor(logCalls(cfg.Log)))
	csi.RegisterIdentityServer(csiSrv, identity{name: cfg.Name, version: cfg.Version, controller: cfg.Controller != nil})
	csi.RegisterNodeServer(csiSrv, node)
	if cfg.Controller != nil {
		csi.RegisterControllerServer(csiSrv, cfg.Controller)
	}
	errc := make(chan error, 2)
	go func() { errc <- csiSrv.Serve(csiLn) }()
	servers := []*grpc.Server{csiSrv}
	if cfg.RegistrationSocket != "" {
		regLn, err := listen(cfg.RegistrationSocket)
		if err != nil {
			csiSrv.Stop()
			return err
		}
		regSrv := grpc.NewServer()
		registerapi.RegisterRegistrationServer(regSrv, registration{cfg: cfg})
		go func() { errc <- regSrv.Serve(regLn) }()
		servers = append(servers, regSrv)
	}
	cfg.Log.Info("serving the share driver", "driver", cfg.Name, "socket", cfg.Socket, "registration", cfg.RegistrationSocket)
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, s := range servers {
		s.GracefulStop()
	}
	// The registration socket goes: the kubelet then deregisters the driver.
	for _, p := range []string{cfg.RegistrationSocket, cfg.Socket} {
		if p != "" {
			os.Remove(p)
		}
	}
	return err
}

// listen replaces a socket a previous run left.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, os.Chmod(path, 0o600)
}

// logCalls logs each call's method, volume ID, duration and error; never the request (it may hold a Secret).
func logCalls(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		t0 := time.Now()
		resp, err := handler(ctx, req)
		attrs := []any{"method", info.FullMethod, "took", time.Since(t0).Round(time.Millisecond)}
		if v, ok := req.(interface{ GetVolumeId() string }); ok && v.GetVolumeId() != "" {
			attrs = append(attrs, "volume", v.GetVolumeId())
		}
		if err != nil {
			log.Warn("csi call failed", append(attrs, "code", status.Code(err).String(), "error", status.Convert(err).Message())...)
		} else {
			log.Debug("csi call", attrs...)
		}
		return resp, err
	}
}

type identity struct {
	csi.UnimplementedIdentityServer
	name, version string
	controller    bool // a Controller service is served too
}

func (i identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: i.name, VendorVersion: i.version}, nil
}

func (i identity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	if !i.controller {
		return &csi.GetPluginCapabilitiesResponse{}, nil
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{{Type: &csi.PluginCapability_Service_{
		Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}}}}, nil
}

func (i identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil // ready: the Node service has nothing to wait for
}

type registration struct {
	registerapi.UnimplementedRegistrationServer
	cfg Config
}

func (r registration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: r.cfg.Name, Endpoint: r.cfg.Socket, SupportedVersions: []string{"1.0.0"}}, nil
}

func (r registration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		r.cfg.Log.Info("the kubelet registered the share driver", "driver", r.cfg.Name)
	} else {
		r.cfg.Log.Error("the kubelet refused the share driver", "driver", r.cfg.Name, "error", s.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
