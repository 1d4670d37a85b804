package main

import (
	"context"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/podroutes"
)

// routeController runs the kubenet route controller (agent/podroutes) while the applied NodeConfig asks for
// cni.mode bridge: routes to the other Nodes' pod CIDRs, with the kubelet's credentials. The daemon calls follow
// after every successful apply (so the node has joined), on its own goroutine.
type routeController struct {
	ctx context.Context
	run func(ctx context.Context, nodeName string) // until ctx ends: node.podRoutes

	name   string // the node name the running controller serves; "" when none runs
	cancel context.CancelFunc
	done   chan struct{}
}

// follow starts, stops or restarts the controller to match c: a switch to cni.mode none (a CNI DaemonSet routes)
// stops it, leaving its routes to that CNI; a switch back or a new node name starts it again.
func (r *routeController) follow(c *nodeconfig.Config) {
	name := c.Node.Name
	if c.CNI.Mode == nodeconfig.CNINone {
		name = ""
	}
	if name == r.name {
		return
	}
	r.stop()
	if name == "" {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.name, r.cancel, r.done = name, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		r.run(ctx, name)
	}(r.done)
}

func (r *routeController) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	r.name, r.cancel, r.done = "", nil, nil
}

// podRoutes runs the controller for node name until ctx ends, starting it again after an error.
func (n *node) podRoutes(ctx context.Context, name string) {
	for {
		if err := n.runPodRoutes(ctx, name); err != nil {
			n.log.Warn("pod routes", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (n *node) runPodRoutes(ctx context.Context, name string) error {
	rc, err := clientcmd.BuildConfigFromFlags("", n.paths.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubelet kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	n.log.Info("pod routes: watching Nodes", "node", name)
	return podroutes.Run(ctx, podroutes.Config{Client: cs, NodeName: name, Table: podroutes.Netlink{Handle: &netlink.Handle{}}, Log: n.log})
}
