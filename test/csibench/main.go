// Command csibench times a driver's Node calls in a guest, as the kubelet makes them for one pod: n cycles of
// NodeStageVolume, NodePublishVolume, NodeUnpublishVolume and NodeUnstageVolume of one volume, each call timed on
// its own. With -keep, another volume of the same share stays staged through the loop, so a stage is a bind of a
// mounted share; without, each stage mounts the share (its last volume's unstage unmounted it). The requests are
// protojson files (a Secret never goes on a command line); the result, on stdout, is each call's mean and worst in
// nanoseconds, as JSON.
//
//	csibench -socket /var/lib/kubelet/plugins/smb.shares.berth.dev/csi.sock -n 5 -stage stage.json -publish publish.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Result is a call's timing over the cycles.
type Result struct {
	MeanNS  int64 `json:"meanNs"`
	WorstNS int64 `json:"worstNs"`
}

func main() {
	socket := flag.String("socket", "", "the driver's CSI socket")
	n := flag.Int("n", 1, "cycles")
	stage := flag.String("stage", "", "the NodeStageVolume request (protojson file)")
	publish := flag.String("publish", "", "the NodePublishVolume request (protojson file)")
	keep := flag.String("keep", "", "a NodeStageVolume request of another volume of the share, staged through the loop")
	flag.Parse()
	if *socket == "" || *stage == "" || *publish == "" || *n < 1 || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: csibench -socket PATH -n N -stage FILE -publish FILE [-keep FILE]")
		os.Exit(2)
	}
	out, err := run(*socket, *n, *stage, *publish, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func read(file string, m proto.Message) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

func run(socket string, n int, stageFile, publishFile, keepFile string) (map[string]Result, error) {
	st, pub := &csi.NodeStageVolumeRequest{}, &csi.NodePublishVolumeRequest{}
	if err := read(stageFile, st); err != nil {
		return nil, err
	}
	if err := read(publishFile, pub); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	node := csi.NewNodeClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if keepFile != "" {
		k := &csi.NodeStageVolumeRequest{}
		if err := read(keepFile, k); err != nil {
			return nil, err
		}
		if _, err := node.NodeStageVolume(ctx, k, grpc.WaitForReady(true)); err != nil {
			return nil, fmt.Errorf("stage the kept volume: %w", err)
		}
		defer node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: k.VolumeId, StagingTargetPath: k.StagingTargetPath})
	}
	calls := []struct {
		name string
		do   func() error
	}{
		{"NodeStageVolume", func() error { _, err := node.NodeStageVolume(ctx, st); return err }},
		{"NodePublishVolume", func() error { _, err := node.NodePublishVolume(ctx, pub); return err }},
		{"NodeUnpublishVolume", func() error {
			_, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: pub.VolumeId, TargetPath: pub.TargetPath})
			return err
		}},
		{"NodeUnstageVolume", func() error {
			_, err := node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: st.VolumeId, StagingTargetPath: st.StagingTargetPath})
			return err
		}},
	}
	total, worst := map[string]time.Duration{}, map[string]time.Duration{}
	for range n {
		for _, c := range calls {
			start := time.Now()
			if err := c.do(); err != nil {
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
			d := time.Since(start)
			total[c.name] += d
			worst[c.name] = max(worst[c.name], d)
		}
	}
	out := map[string]Result{}
	for name, d := range total {
		out[name] = Result{MeanNS: int64(d) / int64(n), WorstNS: int64(worst[name])}
	}
	return out, nil
}
