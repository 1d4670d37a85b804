package main

import (
	"context"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"berth.dev/berth/agent/join"
	"berth.dev/berth/agent/podroutes"
)

// podRoutes runs the kubenet route controller (agent/podroutes) for as long as ctx lasts, once the node has joined
// with cni.mode bridge: routes to the other Nodes' pod CIDRs, with the kubelet's credentials. It waits for the
// join, and starts again after an error.
func (n *node) podRoutes(ctx context.Context, hostname string) {
	for {
		err := n.runPodRoutes(ctx, hostname)
		if err != nil {
			n.log.Warn("pod routes", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// runPodRoutes returns nil at once when the node has not joined yet or needs no routes.
func (n *node) runPodRoutes(ctx context.Context, hostname string) error {
	if !n.joined() {
		return nil
	}
	c, err := n.load()
	if err != nil {
		return err
	}
	if c.Spec.CNI.Mode == "none" {
		<-ctx.Done() // a CNI DaemonSet does the routing; switching to bridge later takes effect at the next agent start
		return nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", n.paths.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubelet kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	name := join.NodeNameOf(c.Spec, hostname)
	n.log.Info("pod routes: watching Nodes", "node", name)
	return podroutes.Run(ctx, podroutes.Config{Client: cs, NodeName: name, Table: podroutes.Netlink{Handle: &netlink.Handle{}}, Log: n.log})
}
