package plugin

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type stubNode struct{ csi.UnimplementedNodeServer }

func (stubNode) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: "node-1"}, nil
}

func (stubNode) NodeStageVolume(context.Context, *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	return nil, status.Error(codes.InvalidArgument, "source: required")
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Over real unix sockets, as the kubelet calls them: registration names the driver and its CSI endpoint; the
// Identity and Node services answer there; a failed call is logged with its method, volume and message but not
// its Secret; when the plugin stops, both sockets go (the kubelet then deregisters the driver).
func TestServeAndRegister(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	cfg := Config{Name: SMB, Version: "0.1.0", Socket: filepath.Join(dir, "plugins", SMB, "csi.sock"),
		RegistrationSocket: filepath.Join(dir, "plugins_registry", SMB+"-reg.sock"), Log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg, stubNode{}) }()
	wait := grpc.WaitForReady(true) // until the plugin listens
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()

	info, err := registerapi.NewRegistrationClient(dial(t, cfg.RegistrationSocket)).GetInfo(cctx, &registerapi.InfoRequest{}, wait)
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != SMB || info.Endpoint != cfg.Socket || len(info.SupportedVersions) == 0 {
		t.Errorf("registration info %+v", info)
	}
	conn := dial(t, info.Endpoint)
	pi, err := csi.NewIdentityClient(conn).GetPluginInfo(cctx, &csi.GetPluginInfoRequest{}, wait)
	if err != nil || pi.Name != SMB || pi.VendorVersion != "0.1.0" {
		t.Errorf("GetPluginInfo: %+v %v", pi, err)
	}
	if _, err := csi.NewIdentityClient(conn).Probe(cctx, &csi.ProbeRequest{}); err != nil {
		t.Errorf("Probe: %v", err)
	}
	if ni, err := csi.NewNodeClient(conn).NodeGetInfo(cctx, &csi.NodeGetInfoRequest{}); err != nil || ni.NodeId != "node-1" {
		t.Errorf("NodeGetInfo: %+v %v", ni, err)
	}
	_, err = csi.NewNodeClient(conn).NodeStageVolume(cctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-1", Secrets: map[string]string{"password": "hunter2"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("NodeStageVolume: %v", err)
	}
	if fi, err := os.Stat(cfg.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CSI socket: %v %v, want 0600", fi.Mode(), err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	for _, p := range []string{cfg.Socket, cfg.RegistrationSocket} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after stop: %v", p, err)
		}
	}
	l := logs.String()
	if !strings.Contains(l, "NodeStageVolume") || !strings.Contains(l, "volume=vol-1") || !strings.Contains(l, "source: required") || strings.Contains(l, "hunter2") {
		t.Errorf("log of the failed call (method, volume, message; never the Secret):\n%s", l)
	}
}
