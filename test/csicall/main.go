// Command csicall makes one CSI Node or Controller call on a driver's socket, as the kubelet would, for tests that run it in a
// guest: the request is protojson on stdin (so a Secret never goes on a command line), the response protojson on
// stdout; a failed call prints its gRPC code and message on stderr and exits 1.
//
//	csicall -socket /var/lib/kubelet/plugins/smb.shares.berth.dev/csi.sock NodeStageVolume < request.json
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func main() {
	socket := flag.String("socket", "", "the driver's CSI socket")
	timeout := flag.Duration("timeout", 3*time.Minute, "the call's deadline")
	flag.Parse()
	if *socket == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: csicall -socket PATH NodeStageVolume|NodeUnstageVolume|NodePublishVolume|NodeUnpublishVolume|NodeGetCapabilities|CreateVolume|DeleteVolume < request.json")
		os.Exit(2)
	}
	if err := call(*socket, flag.Arg(0), *timeout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func call(socket, method string, timeout time.Duration) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	node, ctrl := csi.NewNodeClient(conn), csi.NewControllerClient(conn)
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var req, resp proto.Message
	var do func() (proto.Message, error)
	switch method {
	case "NodeStageVolume":
		r := &csi.NodeStageVolumeRequest{}
		req, do = r, func() (proto.Message, error) { return node.NodeStageVolume(ctx, r, grpc.WaitForReady(true)) }
	case "NodeUnstageVolume":
		r := &csi.NodeUnstageVolumeRequest{}
		req, do = r, func() (proto.Message, error) { return node.NodeUnstageVolume(ctx, r, grpc.WaitForReady(true)) }
	case "NodePublishVolume":
		r := &csi.NodePublishVolumeRequest{}
		req, do = r, func() (proto.Message, error) { return node.NodePublishVolume(ctx, r, grpc.WaitForReady(true)) }
	case "NodeUnpublishVolume":
		r := &csi.NodeUnpublishVolumeRequest{}
		req, do = r, func() (proto.Message, error) { return node.NodeUnpublishVolume(ctx, r, grpc.WaitForReady(true)) }
	case "CreateVolume":
		r := &csi.CreateVolumeRequest{}
		req, do = r, func() (proto.Message, error) { return ctrl.CreateVolume(ctx, r, grpc.WaitForReady(true)) }
	case "DeleteVolume":
		r := &csi.DeleteVolumeRequest{}
		req, do = r, func() (proto.Message, error) { return ctrl.DeleteVolume(ctx, r, grpc.WaitForReady(true)) }
	case "NodeGetCapabilities":
		r := &csi.NodeGetCapabilitiesRequest{}
		req, do = r, func() (proto.Message, error) { return node.NodeGetCapabilities(ctx, r, grpc.WaitForReady(true)) }
	default:
		return fmt.Errorf("unknown method %q", method)
	}
	if len(in) > 0 {
		if err := protojson.Unmarshal(in, req); err != nil {
			return fmt.Errorf("request: %w", err)
		}
	}
	resp, err = do()
	if err != nil {
		s := status.Convert(err)
		return fmt.Errorf("%s: %s", s.Code(), s.Message())
	}
	out, _ := protojson.Marshal(resp)
	fmt.Println(string(out))
	return nil
}
