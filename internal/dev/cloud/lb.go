package cloud

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	lbv1 "berth.dev/berth/agent/api/lb/v1alpha1"
	"berth.dev/berth/deploy"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/atomicfile"
)

// LBConfig is the cloud's shared load balancer.
type LBConfig struct {
	// Agent is the berth-agent binary the LB hosts and the controller run (required).
	Agent string
	// Hosts is how many LB hosts (default 2).
	Hosts int
	// Pool is the frontend range (default 10.89.0.0/28), outside the node subnet: the client namespace reaches it
	// on-link, so it asks by ARP and the LB host that owns a frontend IP answers.
	Pool netip.Prefix
}

// LB is the cloud's running load balancer: the controller in the cloud's namespace, each LB host in a namespace
// of its own on the bridge (the subnet's 5th address on), and a client namespace on the bridge (the 4th address)
// that reaches the frontend range, as a client outside the cluster does.
type LB struct {
	Client   netns.NS
	ClientIP netip.Addr
	Hosts    []netns.NS
	Pool     netip.Prefix
	// Dir holds the LoadBalancerConfig, the hosts' status files and the logs.
	Dir string
}

// LBNamespaces are the load balancer's namespaces, for Down.
func (l *LB) namespaces() []string {
	out := []string{l.Client.Name}
	for _, h := range l.Hosts {
		out = append(out, h.Name)
	}
	return out
}

// StatusFile is LB host i's (from 1) status file.
func (l *LB) StatusFile(i int) string { return filepath.Join(l.Dir, fmt.Sprintf("lb-%d.json", i)) }

// StartLB starts the shared load balancer: a LoadBalancerConfig serving Services of type LoadBalancer without a
// class (the cloud's own load balancer, as a managed cloud's), the controller, the LB hosts in floating-IP mode
// announcing on their eth0, and the client namespace. The processes log to <Dir>/lb/logs and stop with the cloud.
func (c *Cloud) StartLB(ctx context.Context, cfg LBConfig) (*LB, error) {
	if cfg.Agent == "" {
		return nil, errors.New("cloud: LB: Agent: required")
	}
	if cfg.Hosts == 0 {
		cfg.Hosts = 2
	}
	if !cfg.Pool.IsValid() {
		cfg.Pool = netip.MustParsePrefix("10.89.0.0/28")
	}
	if cfg.Pool.Overlaps(c.cfg.Subnet) {
		return nil, fmt.Errorf("cloud: LB: Pool %s overlaps the node subnet %s", cfg.Pool, c.cfg.Subnet)
	}
	l := &LB{Pool: cfg.Pool, Dir: filepath.Join(c.cfg.Dir, "lb")}
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return nil, err
	}
	doc := lbv1.LoadBalancerConfig{APIVersion: lbv1.APIVersion, Kind: lbv1.Kind, Spec: lbv1.LoadBalancerConfigSpec{
		// The pool's network and broadcast addresses are left out: a frontend IP of x.x.x.0 is valid, but puzzling.
		DefaultClass: true, Pools: []lbv1.Pool{{Name: "cloud", Addresses: []string{poolRange(cfg.Pool)}}},
		Health: lbv1.Health{Interval: metav1.Duration{Duration: 2 * time.Second}, Threshold: 2}}}
	if errs := doc.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("cloud: LB: %w", errs.ToAggregate())
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	config := filepath.Join(l.Dir, "lb.yaml")
	if err := atomicfile.Write(config, data, 0o644); err != nil {
		return nil, err
	}
	controllerKubeconfig, hostKubeconfig, err := c.lbCredentials(ctx, l.Dir)
	if err != nil {
		return nil, err
	}
	addr := func(n int) netip.Addr {
		a := c.cfg.Subnet.Addr()
		for range n {
			a = a.Next()
		}
		return a
	}
	attach := func(name, port string, a netip.Addr, extra ...[]string) (netns.NS, error) {
		ns, err := netns.Create(name)
		if err != nil {
			return ns, err
		}
		cmds := [][]string{{"link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.Name},
			{"link", "set", port, "master", "br0"}, {"link", "set", port, "up"}}
		for _, args := range cmds {
			if err := c.NS.Run("ip", args...); err != nil {
				return ns, fmt.Errorf("cloud: LB: %s: %w", name, err)
			}
		}
		for _, args := range append([][]string{{"link", "set", "lo", "up"}, {"link", "set", "eth0", "up"},
			{"addr", "add", netip.PrefixFrom(a, c.cfg.Subnet.Bits()).String(), "dev", "eth0"}}, extra...) {
			if err := ns.Run("ip", args...); err != nil {
				return ns, fmt.Errorf("cloud: LB: %s: %w", name, err)
			}
		}
		return ns, nil
	}
	var err2 error
	l.ClientIP = addr(4)
	if l.Client, err2 = attach(c.NS.Name+"-client", "client", l.ClientIP, []string{"route", "add", cfg.Pool.String(), "dev", "eth0"}); err2 != nil {
		return l, err2
	}
	c.LB = l // from here Down removes what was made
	group := &proc.Group{Registry: *c.cfg.Registry, Dir: l.Dir, Detached: c.cfg.Detached}
	if _, err := group.Start("lb-controller", "nsenter", "--net="+c.NS.Path(), "--", cfg.Agent, "lb", "controller",
		"-config", config, "-kubeconfig", controllerKubeconfig, "-identity", c.cfg.Name); err != nil {
		return l, fmt.Errorf("cloud: LB: %w", err)
	}
	for i := 1; i <= cfg.Hosts; i++ {
		name := "lb-" + strconv.Itoa(i)
		ns, err := attach(fmt.Sprintf("%s-lb%d", c.NS.Name, i), fmt.Sprintf("lb%d", i), addr(4+i))
		if err != nil {
			return l, err
		}
		l.Hosts = append(l.Hosts, ns)
		if err := c.save(); err != nil {
			return l, err
		}
		if _, err := group.Start(name, "nsenter", "--net="+ns.Path(), "--", cfg.Agent, "lb", "host", "-config", config,
			"-kubeconfig", hostKubeconfig, "-interface", "eth0", "-identity", name, "-status-file", l.StatusFile(i)); err != nil {
			return l, fmt.Errorf("cloud: LB: %w", err)
		}
	}
	if err := c.save(); err != nil {
		return l, err
	}
	c.cfg.Log.Info("load balancer started", "hosts", cfg.Hosts, "pool", cfg.Pool, "client", l.Client.Name)
	return l, nil
}

// lbCredentials applies the load balancer's RBAC (deploy/lb-rbac.yaml) and writes a kubeconfig (0600, atomically)
// for each of its ServiceAccounts, with a token from the TokenRequest API: the controller and the LB hosts run with
// what the manifest grants them, not as cluster-admin.
func (c *Cloud) lbCredentials(ctx context.Context, dir string) (controller, host string, err error) {
	objs, err := deploy.Objects(deploy.LBRBAC)
	if err != nil {
		return "", "", fmt.Errorf("cloud: LB RBAC: %w", err)
	}
	cs := c.CP.Client
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			err = fmt.Errorf("unexpected %T", o)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return "", "", fmt.Errorf("cloud: LB RBAC: %w", err)
		}
	}
	admin, err := clientcmd.LoadFromFile(c.CP.KubeconfigPath())
	if err != nil {
		return "", "", err
	}
	kubeconfig := func(sa string) (string, error) {
		year := int64(365 * 24 * 3600)
		tr, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceSystem).CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &year}}, metav1.CreateOptions{})
		if err != nil {
			return "", fmt.Errorf("cloud: token for %s: %w", sa, err)
		}
		kc := admin.DeepCopy()
		kc.AuthInfos = map[string]*clientcmdapi.AuthInfo{sa: {Token: tr.Status.Token}}
		for _, ctx := range kc.Contexts {
			ctx.AuthInfo = sa
		}
		data, err := clientcmd.Write(*kc)
		if err != nil {
			return "", err
		}
		path := filepath.Join(dir, sa+".kubeconfig")
		return path, atomicfile.Write(path, data, 0o600)
	}
	if controller, err = kubeconfig("berth-lb-controller"); err != nil {
		return "", "", err
	}
	host, err = kubeconfig("berth-lb-host")
	return controller, host, err
}

// poolRange is p without its first and last address, as a LoadBalancerConfig range.
func poolRange(p netip.Prefix) string {
	a := p.Masked().Addr().As4()
	n := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], n)
	return p.Masked().Addr().Next().String() + "-" + netip.AddrFrom4(a).Prev().String()
}
