// Package cloud runs a local cloud on this machine: a network namespace with a bridge, the control plane bound
// to the bridge's address inside it, and qemu (TCG) guests booted from a baked node image, each on a tap device
// on the bridge with its own NoCloud seed: a static address (cloud-init/network-config.yaml), its NodeConfig
// (cloud-init/nodeconfig.cloud-config.yaml) and an SSH key. The namespace has no route out and forwards nothing,
// so the guests reach only each other and the control plane; this process reaches them by entering the
// namespace (ssh through nsenter, the apiserver through a dialer that opens its sockets there).
package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"berth.dev/berth/agent/nodeready"
	cloudinit "berth.dev/berth/cloud-init"
	"berth.dev/berth/imagebuilder/qemu"
	"berth.dev/berth/internal/dev/clusterdns"
	"berth.dev/berth/internal/dev/controlplane"
	"berth.dev/berth/internal/dev/guestssh"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/internal/node/bootstraptoken"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Config describes a cloud. Zero values get defaults.
type Config struct {
	// Name names the namespace (berth-<Name>); default "cloud".
	Name string
	// Dir holds the control plane, the guests' work dirs and the SSH key.
	Dir string
	// BinDir holds the control plane's binaries (tools/build.sh k8s).
	BinDir string
	// Image is the node image every guest boots (qcow2 unless Format says otherwise).
	Image, Format string
	// Subnet is the node network: its first address is the bridge's and the control plane's, nodes get the
	// 11th address on. Default 10.88.0.0/24.
	Subnet netip.Prefix
	// GuestMemoryMiB is each guest's memory; default 2048.
	GuestMemoryMiB int
	// NodeMonitorGracePeriod is how long a silent node stays Ready (default: the controller manager's, 50s).
	NodeMonitorGracePeriod time.Duration
	// JoinTokenTTL is how long each node's bootstrap token lives (default 30 minutes): every node gets a token of
	// its own, which WaitJoined deletes once the node is Ready, as a provisioning service retires a node's
	// credential after it joined.
	JoinTokenTTL time.Duration
	// Detached guests and control plane outlive this process (berth-dev cloud up); stop them with Down.
	Detached bool
	// Registry records the guests and the control plane's processes (default proc.DefaultRegistry): a test
	// killed midway leaves nothing running after the next run's sweep.
	Registry *proc.Registry
	Log      *slog.Logger
}

// Cloud is a running local cloud.
type Cloud struct {
	cfg     Config
	NS      netns.NS
	Gateway netip.Addr // the bridge's address, where the control plane listens
	CP      *controlplane.ControlPlane
	Join    controlplane.JoinInfo
	key     string
	pub     string
	image   string // absolute path of cfg.Image
	imageID string // its ImageID at Up
	Nodes   []*Node
	// LB is the shared load balancer, once StartLB ran.
	LB *LB
	// Analytics is the log analytics service and the log shipper, once StartAnalytics ran.
	Analytics *Analytics
	// Shares are the file servers and their StorageClasses, once StartShares ran.
	Shares *Shares
}

// Node is a guest of the cloud.
type Node struct {
	Name string
	IP   netip.Addr
	MAC  string
	Tap  string
	SSH  guestssh.Target
	// Serial is its console log.
	Serial string
	// Started is when its qemu started.
	Started time.Time
	// Token is its own bootstrap token (zero for a bare guest); WaitJoined deletes it on the control plane.
	Token bootstraptoken.Token
	qemu  *proc.Process
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = "cloud"
	}
	if c.Format == "" {
		c.Format = "qcow2"
	}
	if !c.Subnet.IsValid() {
		c.Subnet = netip.MustParsePrefix("10.88.0.0/24")
	}
	if c.GuestMemoryMiB == 0 {
		c.GuestMemoryMiB = 2048
	}
	if c.JoinTokenTTL == 0 {
		c.JoinTokenTTL = 30 * time.Minute
	}
	c.Log, c.Registry = proc.Defaults(c.Log, c.Registry)
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("cloud: Dir: required"))
	} else if abs, err := filepath.Abs(c.Dir); err == nil {
		c.Dir = abs
	}
	if c.Image == "" {
		errs = append(errs, errors.New("cloud: Image: required"))
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 24 || c.Subnet.Masked() != c.Subnet {
		errs = append(errs, fmt.Errorf("cloud: Subnet: %s: want an IPv4 network of /24 or larger", c.Subnet))
	}
	return errors.Join(errs...)
}

// Up creates the namespace and its bridge and starts the control plane inside it. Add guests with AddNode.
func Up(ctx context.Context, cfg Config) (_ *Cloud, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &Cloud{cfg: cfg, Gateway: cfg.Subnet.Addr().Next()}
	if c.image, err = filepath.Abs(cfg.Image); err != nil {
		return nil, err
	}
	if c.imageID, err = ImageID(c.image); err != nil {
		return nil, fmt.Errorf("cloud: Image: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	// Every cloud starts with a fresh cluster: its guests are new machines, and an old etcd would still hold
	// Nodes of the same names and their pods.
	if err := os.RemoveAll(filepath.Join(cfg.Dir, "controlplane")); err != nil {
		return nil, err
	}
	if c.NS, err = netns.Create("berth-" + cfg.Name); err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	defer func() {
		if err != nil {
			c.Down()
		}
	}()
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", netip.PrefixFrom(c.Gateway, cfg.Subnet.Bits()).String(), "dev", "br0"},
		{"link", "set", "br0", "up"},
	} {
		if err := c.NS.Run("ip", args...); err != nil {
			return nil, fmt.Errorf("cloud: bridge: %w", err)
		}
	}
	if c.key, c.pub, err = guestssh.NewKey(cfg.Dir); err != nil {
		return nil, err
	}
	c.CP, err = controlplane.Start(ctx, controlplane.Config{Dir: filepath.Join(cfg.Dir, "controlplane"), BinDir: cfg.BinDir,
		NetNS: c.NS.Path(), BindAddress: c.Gateway, NodeMonitorGracePeriod: cfg.NodeMonitorGracePeriod, Registry: cfg.Registry, Detached: cfg.Detached,
		Log: cfg.Log.With("cloud", cfg.Name)})
	if err != nil {
		return nil, fmt.Errorf("cloud: control plane: %w", err)
	}
	if c.Join, err = c.CP.JoinInfo(); err != nil {
		return nil, err
	}
	// Cluster DNS, as kubeadm's add-on: its pods start once nodes are Ready (their image is in the node image).
	if err := clusterdns.Apply(ctx, c.CP.Client, clusterdns.ServiceIP(c.CP.Config().ServiceCIDR), 2); err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	cfg.Log.Info("cloud up", "namespace", c.NS.Name, "bridge", c.Gateway, "endpoint", c.CP.Endpoint)
	return c, nil
}

// AddNode boots the next guest: node-N at the subnet's (10+N)th address, on tap N, joining the control plane with
// the cloud's join material. It returns once qemu runs; WaitSSH waits for the boot.
func (c *Cloud) AddNode(ctx context.Context) (*Node, error) { return c.addGuest(ctx, true) }

// AddBareGuest boots the next guest like AddNode but without a NodeConfig: its agent waits, nothing joins. It is
// the baseline for boot times.
func (c *Cloud) AddBareGuest(ctx context.Context) (*Node, error) { return c.addGuest(ctx, false) }

func (c *Cloud) addGuest(ctx context.Context, join bool) (*Node, error) {
	i := len(c.Nodes) + 1
	ip := c.cfg.Subnet.Addr()
	for range 10 + i {
		ip = ip.Next()
	}
	if !c.cfg.Subnet.Contains(ip) {
		return nil, fmt.Errorf("cloud: node %d: %s is outside %s", i, ip, c.cfg.Subnet)
	}
	a := ip.As4()
	prefix := "node"
	if !join {
		prefix = "bare"
	}
	n := &Node{Name: fmt.Sprintf("%s-%d", prefix, i), IP: ip, Tap: fmt.Sprintf("tap%d", i),
		MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", a[1], a[2], a[3])}
	for _, args := range [][]string{
		{"tuntap", "add", "dev", n.Tap, "mode", "tap"},
		{"link", "set", n.Tap, "master", "br0"},
		{"link", "set", n.Tap, "up"},
	} {
		if err := c.NS.Run("ip", args...); err != nil {
			return nil, fmt.Errorf("cloud: %s: tap: %w", n.Name, err)
		}
	}
	userData := guestssh.UserData(c.pub, "")
	if join {
		tok, err := c.CP.MintToken(ctx, c.cfg.JoinTokenTTL)
		if err != nil {
			return nil, fmt.Errorf("cloud: %s: %w", n.Name, err)
		}
		if err := c.CP.WaitTokenSigned(ctx, tok.ID()); err != nil {
			return nil, fmt.Errorf("cloud: %s: %w", n.Name, err)
		}
		n.Token = tok
		userData = guestssh.UserData(c.pub, cloudinit.UserData(cloudinit.Join{Endpoint: c.CP.Endpoint, Token: tok,
			CACertPin: c.Join.CACertPin, NodeName: n.Name}))
	}
	seed := qemu.Seed{
		UserData:      userData,
		NetworkConfig: cloudinit.NetworkConfig(cloudinit.Network{MAC: n.MAC, Address: netip.PrefixFrom(ip, c.cfg.Subnet.Bits()), Gateway: c.Gateway}),
	}
	prep, err := qemu.Prepare(ctx, qemu.Config{Name: n.Name, Dir: filepath.Join(c.cfg.Dir, n.Name), Image: c.cfg.Image,
		Format: c.cfg.Format, Seed: seed, MemoryMiB: c.cfg.GuestMemoryMiB, Tap: &qemu.Tap{Name: n.Tap, MAC: n.MAC}, NetNS: c.NS.Path()})
	if err != nil {
		return nil, fmt.Errorf("cloud: %s: %w", n.Name, err)
	}
	n.Serial, n.Started = prep.Serial, time.Now()
	n.qemu, err = c.cfg.Registry.Start(proc.Spec{Name: n.Name, Group: c.cfg.Dir, Path: prep.Argv[0], Args: prep.Argv[1:],
		Log: prep.Log, Detached: c.cfg.Detached})
	if err != nil {
		return nil, fmt.Errorf("cloud: %s: %w", n.Name, err)
	}
	n.SSH = guestssh.Target{Key: c.key, Host: ip.String(), NetNS: c.NS.Path()}
	c.Nodes = append(c.Nodes, n)
	if err := c.save(); err != nil {
		return nil, err
	}
	c.cfg.Log.Info("node started", "node", n.Name, "ip", ip, "mac", n.MAC)
	return n, nil
}

// RoutePods routes each Node's pod CIDR to its address in the namespace, as a cloud's route table does for kubenet
// nodes (AKS writes one route per node): replies from the control plane to pods (CoreDNS and other in-cluster
// clients reach the apiserver through the kubernetes Service, keeping the pod's address) find their node. Nodes
// without a pod CIDR yet are left out; run it again once they have one. It is idempotent.
func (c *Cloud) RoutePods(ctx context.Context) error {
	byName := map[string]netip.Addr{}
	for _, n := range c.Nodes {
		byName[n.Name] = n.IP
	}
	nodes, err := c.CP.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("cloud: route pods: %w", err)
	}
	for _, n := range nodes.Items {
		ip, ok := byName[n.Name]
		if !ok || n.Spec.PodCIDR == "" {
			continue
		}
		cidr, err := netip.ParsePrefix(n.Spec.PodCIDR)
		if err != nil {
			return fmt.Errorf("cloud: route pods: node %s: podCIDR %q: %w", n.Name, n.Spec.PodCIDR, err)
		}
		if err := c.NS.Run("ip", "route", "replace", cidr.Masked().String(), "via", ip.String(), "dev", "br0"); err != nil {
			return fmt.Errorf("cloud: route pods: %w", err)
		}
	}
	return nil
}

// WaitJoined waits until the node's Node is Ready (polling every poll), then deletes the node's bootstrap token on
// the control plane: the token was the node's alone, and a joined node renews its own certificate, so a copy of it
// left anywhere (the seed, a log) no longer authenticates anyone.
func (c *Cloud) WaitJoined(ctx context.Context, n *Node, poll time.Duration) (*corev1.Node, error) {
	node, err := nodeready.Wait(ctx, c.CP.Client.CoreV1().Nodes(), n.Name, poll)
	if err != nil {
		return nil, fmt.Errorf("%w; %s's console:\n%s", err, n.Name, n.Tail(20))
	}
	if n.Token.IsZero() {
		return node, nil
	}
	err = c.CP.Client.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, bootstrapapi.BootstrapTokenSecretPrefix+n.Token.ID(), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return node, fmt.Errorf("cloud: %s joined, but its bootstrap token %s stays: %w", n.Name, n.Token.ID(), err)
	}
	return node, nil
}

// WaitSSH waits until the node answers SSH (its boot is done enough to log in), or fails with its console tail.
func (n *Node) WaitSSH(ctx context.Context) error {
	for {
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := n.SSH.Run(tctx, "true", nil)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-n.qemu.Exited():
			return fmt.Errorf("%s exited before SSH answered (%v); console:\n%s", n.Name, n.qemu.ExitErr(), n.Tail(40))
		case <-ctx.Done():
			return fmt.Errorf("%s: no SSH: %w (last: %v); console:\n%s", n.Name, ctx.Err(), err, n.Tail(40))
		case <-time.After(2 * time.Second):
		}
	}
}

// Tail is the end of the node's console.
func (n *Node) Tail(lines int) string { return proc.Tail(n.Serial, lines) }

// Kill kills the guest outright, as a host failure would.
func (n *Node) Kill() error { return n.qemu.Stop(0) }

// Run runs cmd in the node as root and returns its stdout.
func (n *Node) Run(ctx context.Context, cmd string) (string, error) { return n.SSH.Run(ctx, cmd, nil) }

// Down stops the guests and the control plane and deletes the namespace (its bridge and taps go with it).
func (c *Cloud) Down() error {
	var errs []error
	if c.LB != nil {
		_, err := c.cfg.Registry.StopGroup(c.LB.Dir, 5*time.Second)
		errs = append(errs, err)
	}
	if c.Analytics != nil {
		_, err := c.cfg.Registry.StopGroup(c.Analytics.Dir, 5*time.Second)
		errs = append(errs, err)
	}
	if c.Shares != nil {
		errs = append(errs, stopShares(*c.cfg.Registry, c.Shares.Dir))
	}
	for _, n := range c.Nodes {
		if err := n.qemu.Stop(5 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
		}
	}
	if c.CP != nil {
		if err := c.CP.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.removeAll())
	if err := os.Remove(statePath(c.cfg.Dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeAll deletes the namespaces and the guests' work dirs (overlays: gigabytes).
func (c *Cloud) removeAll() error {
	errs := []error{c.NS.Delete()}
	if c.LB != nil {
		for _, name := range c.LB.namespaces() {
			if name != "" {
				errs = append(errs, netns.NS{Name: name}.Delete())
			}
		}
	}
	for _, n := range c.Nodes {
		errs = append(errs, os.RemoveAll(filepath.Dir(n.Serial)))
	}
	return errors.Join(errs...)
}

// State is what a cloud records in <Dir>/cloud.json, for status and for Down from another process.
type State struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Endpoint  string `json:"endpoint"`
	Key       string `json:"sshKey"`
	// Image is the node image's absolute path and ImageID its identity when the cloud came up (see ImageID).
	Image   string      `json:"image"`
	ImageID string      `json:"imageID"`
	Nodes   []NodeState `json:"nodes"`
	// LB is the shared load balancer's, if it was started.
	LB *LBState `json:"lb,omitempty"`
	// Analytics is the analytics service's, if it was started.
	Analytics *AnalyticsState `json:"analytics,omitempty"`
	// Shares are the file servers', if they were started.
	Shares *SharesState `json:"shares,omitempty"`
}

// SharesState is the file servers in State.
type SharesState struct {
	SMB string `json:"smb"`
	NFS string `json:"nfs"`
	Dir string `json:"dir"`
}

// AnalyticsState is the analytics service in State.
type AnalyticsState struct {
	LogsURL    string `json:"logsURL"`
	MetricsURL string `json:"metricsURL"`
	Dir        string `json:"dir"`
}

// LBState is the load balancer in State.
type LBState struct {
	Client   string   `json:"clientNamespace"`
	ClientIP string   `json:"clientIP"`
	Hosts    []string `json:"hostNamespaces"`
	Pool     string   `json:"pool"`
	Dir      string   `json:"dir"`
}

// ImageID identifies the file at path: device, inode, size and modification time. A new bake renamed over the
// path, or the file rewritten, gives a new ID.
func ImageID(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("%s: no inode information", path)
	}
	return fmt.Sprintf("%d:%d:%d:%d", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano()), nil
}

// NodeState is one guest in State.
type NodeState struct {
	Name    string    `json:"name"`
	IP      string    `json:"ip"`
	Serial  string    `json:"serial"`
	Started time.Time `json:"started"`
}

// SSH reaches node n of the cloud st describes.
func (st State) SSH(n NodeState) guestssh.Target {
	return guestssh.Target{Key: st.Key, Host: n.IP, NetNS: netns.NS{Name: st.Namespace}.Path()}
}

func statePath(dir string) string { return filepath.Join(dir, "cloud.json") }

func (c *Cloud) save() error {
	st := State{Name: c.cfg.Name, Namespace: c.NS.Name, Endpoint: c.CP.Endpoint, Key: c.key, Image: c.image, ImageID: c.imageID}
	for _, n := range c.Nodes {
		st.Nodes = append(st.Nodes, NodeState{Name: n.Name, IP: n.IP.String(), Serial: n.Serial, Started: n.Started})
	}
	if l := c.LB; l != nil {
		st.LB = &LBState{Client: l.Client.Name, ClientIP: l.ClientIP.String(), Pool: l.Pool.String(), Dir: l.Dir}
		for _, h := range l.Hosts {
			st.LB.Hosts = append(st.LB.Hosts, h.Name)
		}
	}
	if a := c.Analytics; a != nil {
		st.Analytics = &AnalyticsState{LogsURL: a.LogsURL, MetricsURL: a.MetricsURL, Dir: a.Dir}
	}
	if sh := c.Shares; sh != nil {
		st.Shares = &SharesState{SMB: sh.SMBSource, NFS: sh.NFSSource, Dir: sh.Dir}
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	return atomicfile.Write(statePath(c.cfg.Dir), append(data, '\n'), 0o600)
}

// Load reads the state a cloud recorded in dir.
func Load(dir string) (State, error) {
	var st State
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return st, nil
}

// AdminClient is a cluster-admin client for the cloud recorded in st (brought up in dir, perhaps by another
// process): the apiserver is reached inside the cloud's namespace.
func AdminClient(dir string, st State) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "controlplane", "admin.conf"))
	if err != nil {
		return nil, err
	}
	ns := netns.NS{Name: st.Namespace}
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return ns.DialContext(ctx, network, addr)
	}
	rc.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(rc)
}

// Down stops a cloud that an earlier process brought up in dir, detached: its guests, then its control plane,
// then the namespace; the cluster's data goes too. It is safe to run again.
func Down(dir string, reg proc.Registry) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	st, err := Load(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = reg.StopGroup(dir, 5*time.Second)
	errs := []error{err}
	c := &Cloud{NS: netns.NS{Name: st.Namespace}}
	if st.LB != nil {
		_, err = reg.StopGroup(st.LB.Dir, 5*time.Second)
		errs = append(errs, err)
		c.LB = &LB{Client: netns.NS{Name: st.LB.Client}, Dir: st.LB.Dir}
		for _, h := range st.LB.Hosts {
			c.LB.Hosts = append(c.LB.Hosts, netns.NS{Name: h})
		}
	}
	if st.Analytics != nil {
		_, err = reg.StopGroup(st.Analytics.Dir, 5*time.Second)
		errs = append(errs, err, os.RemoveAll(st.Analytics.Dir))
	}
	if st.Shares != nil {
		errs = append(errs, stopShares(reg, st.Shares.Dir))
	}
	_, err = controlplane.Down(filepath.Join(dir, "controlplane"), reg)
	errs = append(errs, err)
	for _, n := range st.Nodes {
		c.Nodes = append(c.Nodes, &Node{Name: n.Name, Serial: n.Serial})
	}
	errs = append(errs, c.removeAll(), os.RemoveAll(filepath.Join(dir, "controlplane")))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(statePath(dir))
}

// Config is the cloud's configuration, defaults applied.
func (c *Cloud) Config() Config { return c.cfg }
