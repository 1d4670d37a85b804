package podroutes

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/tier"
)

func node(name, cidr string, ips ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
	if cidr != "" {
		n.Spec.PodCIDRs = []string{cidr}
	}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	return n
}

func route(dst, via string) Route {
	return Route{Dst: netip.MustParsePrefix(dst), Via: netip.MustParseAddr(via)}
}

func TestDesired(t *testing.T) {
	got := Desired("self", []*corev1.Node{
		node("c", "10.244.2.0/24", "10.88.0.13"),
		node("self", "10.244.0.0/24", "10.88.0.11"),
		node("b", "10.244.1.0/24", "fd00::12", "10.88.0.12"), // the address of the CIDR's family
		node("no-cidr", "", "10.88.0.14"),
		node("no-ip", "10.244.3.0/24"),
		lostNode("lost", "10.244.4.0/24", "10.88.0.15", corev1.ConditionUnknown),
		lostNode("not-ready", "10.244.5.0/24", "10.88.0.16", corev1.ConditionFalse),
	})
	want := []Route{route("10.244.1.0/24", "10.88.0.12"), route("10.244.2.0/24", "10.88.0.13"), route("10.244.5.0/24", "10.88.0.16")}
	if !slices.Equal(got, want) {
		t.Errorf("Desired = %v, want %v", got, want)
	}
}

func lostNode(name, cidr, ip string, ready corev1.ConditionStatus) *corev1.Node {
	n := node(name, cidr, ip)
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}
	return n
}

type fakeTable struct {
	routes  []Route
	failDel bool
}

func (f *fakeTable) List() ([]Route, error) { return slices.Clone(f.routes), nil }
func (f *fakeTable) Replace(r Route) error {
	f.routes = slices.DeleteFunc(f.routes, func(x Route) bool { return x.Dst == r.Dst })
	f.routes = append(f.routes, r)
	return nil
}
func (f *fakeTable) Delete(r Route) error {
	if f.failDel {
		return errors.New("EPERM")
	}
	f.routes = slices.DeleteFunc(f.routes, func(x Route) bool { return x == r })
	return nil
}

func TestSync(t *testing.T) {
	tab := &fakeTable{routes: []Route{route("10.244.1.0/24", "10.88.0.99"), route("10.244.9.0/24", "10.88.0.19"), route("10.244.2.0/24", "10.88.0.13")}}
	want := []Route{route("10.244.1.0/24", "10.88.0.12"), route("10.244.2.0/24", "10.88.0.13"), route("10.244.3.0/24", "10.88.0.14")}
	added, removed, err := Sync(tab, want)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added, []Route{want[0], want[2]}) || !slices.Equal(removed, []Route{route("10.244.9.0/24", "10.88.0.19")}) {
		t.Errorf("added %v removed %v", added, removed)
	}
	got, _ := tab.List()
	slices.SortFunc(got, func(a, b Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	if !slices.Equal(got, want) {
		t.Errorf("table %v, want %v", got, want)
	}
	if a, r, err := Sync(tab, want); len(a)+len(r) != 0 || err != nil {
		t.Errorf("second sync changed %v %v (%v)", a, r, err)
	}
	tab.failDel = true
	if _, _, err := Sync(tab, want[:1]); err == nil || !strings.Contains(err.Error(), "delete route 10.244.2.0/24 via 10.88.0.13: EPERM") {
		t.Errorf("failed delete: %v", err)
	}
}

// The controller against the real apiserver and the kernel's routing table in a network namespace: routes
// appear for the other Nodes, follow a Node whose address changes, disappear with a deleted Node (also one
// deleted while the controller was down), and routes of another protocol are left alone.
func TestRunProgramsRoutesInANamespace(t *testing.T) {
	tier.Require(t, tier.NetNS)
	ns, err := netns.Create(fmt.Sprintf("berth-routes-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	for _, args := range [][]string{
		{"link", "add", "eth0", "type", "veth", "peer", "name", "peer0"}, {"link", "set", "peer0", "up"},
		{"addr", "add", "10.88.0.11/24", "dev", "eth0"}, {"link", "set", "eth0", "up"},
		{"route", "add", "10.250.0.0/24", "via", "10.88.0.50", "proto", "static"}, // someone else's
	} {
		if err := ns.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	h, err := vnetns.GetFromPath(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	table := Netlink{Handle: nl}

	cp := controlplane.ForTest(t, controlplane.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodes := cp.Client.CoreV1().Nodes()
	put := func(n *corev1.Node) {
		t.Helper()
		if _, err := nodes.Create(ctx, n.DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		// The node lifecycle controller writes new Nodes too (taints): a conflict means read again and retry.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			got, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			got.Status = n.Status
			_, err = nodes.UpdateStatus(ctx, got, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// ipRoutes is what the kernel says, in `ip route` words, for berth's protocol.
	ipRoutes := func() string {
		out, err := ns.Output("ip", "route", "show", "proto", "98")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	waitRoutes := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ipRoutes() != want; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("routes:\n%s\nwant:\n%s", ipRoutes(), want)
			}
		}
	}
	start := func() (stop func()) {
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- Run(rctx, Config{Client: cp.Client, NodeName: "self", Table: table}) }()
		return func() {
			rcancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}

	put(node("self", "10.244.0.0/24", "10.88.0.11"))
	put(node("b", "10.244.1.0/24", "10.88.0.12"))
	put(node("c", "10.244.2.0/24", "10.88.0.13"))
	stop := start()
	waitRoutes("10.244.1.0/24 via 10.88.0.12 dev eth0 \n10.244.2.0/24 via 10.88.0.13 dev eth0")
	put(node("b", "10.244.1.0/24", "10.88.0.22"))
	waitRoutes("10.244.1.0/24 via 10.88.0.22 dev eth0 \n10.244.2.0/24 via 10.88.0.13 dev eth0")
	if err := nodes.Delete(ctx, "c", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRoutes("10.244.1.0/24 via 10.88.0.22 dev eth0")
	stop()

	// While the controller is down, b goes; on restart its route goes too.
	if err := nodes.Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	stop = start()
	waitRoutes("")
	stop()
	if out, _ := ns.Output("ip", "route", "show", "10.250.0.0/24"); !strings.Contains(out, "via 10.88.0.50") {
		t.Errorf("another protocol's route was touched: %q", out)
	}
}
