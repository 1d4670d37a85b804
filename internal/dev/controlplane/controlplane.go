// Package controlplane runs a real, local hosted control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler)
// and provisions what a hosted control plane hands to nodes, the way kubeadm does: bootstrap tokens, the signed
// cluster-info ConfigMap, CSR auto-approval RBAC, and the CA pin. Tests and `berth-dev controlplane` use it.
//
// It binds to 127.0.0.1 or, with Config.NetNS, to an address inside a network namespace the caller created; then
// every component runs inside that namespace and this package reaches the apiserver through a dialer that opens
// its sockets there, so nothing is sent outside it.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/internal/dev/proc"
)

// Config says where and how to run the control plane. Zero values get defaults (see setDefaults).
type Config struct {
	// Dir holds the PKI, etcd's data, kubeconfigs, logs and join material. Reusing a Dir keeps its CA.
	Dir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and kube-scheduler (tools/build.sh k8s prints it).
	BinDir string
	// BindAddress is where the apiserver listens and what it advertises. Default 127.0.0.1.
	BindAddress netip.Addr
	// NetNS is a network namespace (e.g. /run/netns/berth) to run every component in. Empty: this one.
	NetNS string
	// Ports; 0 picks a free port on the host (or the well-known port inside a namespace: 6443, 2379, 2380, 10257,
	// 10259).
	APIServerPort, EtcdClientPort, EtcdPeerPort, ControllerManagerPort, SchedulerPort int
	// ExtraSANs are more IPs or DNS names for the apiserver's serving certificate.
	ExtraSANs []string
	// AdvertiseURL is the apiserver URL that cluster-info hands to nodes (kubeadm join uses it after discovery)
	// and kubeadm-config's controlPlaneEndpoint. Default: Endpoint. Set it when nodes reach the apiserver at
	// another address, such as a qemu guest forward; put that address in ExtraSANs too.
	AdvertiseURL string
	// ServiceCIDR (default 10.96.0.0/12), ClusterCIDR for node pod CIDRs (default 10.244.0.0/16) and the size
	// of each node's pod CIDR (default 24).
	ServiceCIDR, ClusterCIDR netip.Prefix
	NodeCIDRMaskSize         int
	// ServiceCIDRv6, when set, makes Services dual-stack: the apiserver's second service range (IPv6), so that
	// Services may ask for IPv6 (spec.ipFamilies). Pods and nodes stay IPv4.
	ServiceCIDRv6 netip.Prefix
	// ClusterDomain defaults to cluster.local.
	ClusterDomain string
	// NodeMonitorGracePeriod is how long a node may go silent before it is NotReady (default: kcm's, 50s).
	NodeMonitorGracePeriod time.Duration
	// Detached components outlive this process (for `berth-dev controlplane up`); stop them with Down.
	Detached bool
	// Registry tracks the processes; default proc.DefaultRegistry.
	Registry *proc.Registry
	Log      *slog.Logger
}

// Components are the control plane's processes, in start order.
var Components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// Controllers is the kube-controller-manager controller set: what a node join, pod networking and Services need,
// and nothing that slows start-up (the full set takes ~5 s longer to get going).
var Controllers = []string{
	"certificatesigningrequest-approving-controller", "certificatesigningrequest-signing-controller",
	"certificatesigningrequest-cleaner-controller", "bootstrap-signer-controller", "token-cleaner-controller",
	"serviceaccount-controller", "serviceaccount-token-controller", "root-ca-certificate-publisher-controller",
	"namespace-controller", "garbage-collector-controller", "node-lifecycle-controller", "node-ipam-controller",
	"endpointslice-controller", "deployment-controller", "replicaset-controller", "daemonset-controller",
	"pod-garbage-collector-controller", "taint-eviction-controller",
	// Claims bound to the volumes the share drivers' provisioner makes, and the finalizers the apiserver puts on
	// both (StorageObjectInUseProtection) taken off again once nothing uses them.
	"persistentvolume-binder-controller", "persistentvolume-protection-controller", "persistentvolumeclaim-protection-controller",
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	cfg       Config
	log       *slog.Logger
	reg       proc.Registry
	procs     *proc.Group
	serviceIP netip.Addr

	// Endpoint is the apiserver's URL on this host.
	Endpoint string
	// Advertised is the apiserver's URL as nodes use it: Config.AdvertiseURL, else Endpoint.
	Advertised string
	// Admin is a cluster-admin client config (it dials inside NetNS when set).
	Admin  *rest.Config
	Client kubernetes.Interface
	// Timings of Start, measured from its beginning (PKI generation included).
	Timings Timings
}

// Timings are how long Start took to reach its milestones.
type Timings struct {
	Readyz time.Duration // the apiserver answers /readyz ok
	Up     time.Duration // provisioned, and the controller manager has signed cluster-info
}

func (c *Config) setDefaults() error {
	c.Log, c.Registry = proc.Defaults(c.Log, c.Registry)
	if !c.BindAddress.IsValid() {
		c.BindAddress = netip.MustParseAddr("127.0.0.1")
	}
	if !c.ServiceCIDR.IsValid() {
		c.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
	}
	if !c.ClusterCIDR.IsValid() {
		c.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if c.NodeCIDRMaskSize == 0 {
		c.NodeCIDRMaskSize = 24
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("controlplane: Dir: required"))
	} else if abs, err := filepath.Abs(c.Dir); err == nil {
		c.Dir = abs
	}
	for _, bin := range Components {
		if _, err := os.Stat(filepath.Join(c.BinDir, bin)); err != nil {
			errs = append(errs, fmt.Errorf("controlplane: BinDir: %s: %w (run `make tools`)", bin, err))
		}
	}
	if !c.BindAddress.Is4() {
		errs = append(errs, fmt.Errorf("controlplane: BindAddress: %s: only IPv4 is supported", c.BindAddress))
	}
	if c.AdvertiseURL != "" {
		if u, err := url.Parse(c.AdvertiseURL); err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" {
			errs = append(errs, fmt.Errorf("controlplane: AdvertiseURL: %q is not an https://host:port URL", c.AdvertiseURL))
		}
	}
	if c.ServiceCIDRv6.IsValid() && !c.ServiceCIDRv6.Addr().Is6() {
		errs = append(errs, fmt.Errorf("controlplane: ServiceCIDRv6: %s is not IPv6", c.ServiceCIDRv6))
	}
	if c.ClusterCIDR.Bits() > c.NodeCIDRMaskSize {
		errs = append(errs, fmt.Errorf("controlplane: NodeCIDRMaskSize: /%d is larger than ClusterCIDR %s", c.NodeCIDRMaskSize, c.ClusterCIDR))
	}
	wanted := []struct {
		p   *int
		def int
	}{{&c.APIServerPort, 6443}, {&c.EtcdClientPort, 2379}, {&c.EtcdPeerPort, 2380}, {&c.ControllerManagerPort, 10257}, {&c.SchedulerPort, 10259}}
	for _, pt := range wanted {
		switch {
		case *pt.p != 0:
		case c.NetNS != "":
			*pt.p = pt.def
		default:
			p, err := ports.Free()
			if err != nil {
				errs = append(errs, err)
			}
			*pt.p = p
		}
	}
	return errors.Join(errs...)
}

// Start brings the control plane up and provisions it; it returns once the apiserver is ready and the
// controller manager signs cluster-info. On error, whatever it started is stopped.
func Start(ctx context.Context, cfg Config) (_ *ControlPlane, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	c := &ControlPlane{cfg: cfg, log: cfg.Log.With("controlplane", cfg.Dir), reg: *cfg.Registry,
		procs: &proc.Group{Registry: *cfg.Registry, Dir: cfg.Dir, Detached: cfg.Detached}}
	c.serviceIP = cfg.ServiceCIDR.Addr().Next()
	c.Endpoint = "https://" + net.JoinHostPort(cfg.BindAddress.String(), strconv.Itoa(cfg.APIServerPort))
	if c.Advertised = cfg.AdvertiseURL; c.Advertised == "" {
		c.Advertised = c.Endpoint
	}

	// Stale processes first: components of killed test runs, and an earlier instance on this Dir.
	if killed, err := c.reg.Sweep(); err != nil {
		return nil, fmt.Errorf("clean up stale processes: %w", err)
	} else if len(killed) > 0 {
		c.log.Info("killed stale processes from an earlier run", "count", len(killed))
	}
	if _, err := Down(cfg.Dir, c.reg); err != nil {
		return nil, fmt.Errorf("stop the earlier control plane in %s: %w", cfg.Dir, err)
	}
	if cfg.NetNS == "" {
		if err := checkPortsFree(cfg.BindAddress, cfg.APIServerPort, cfg.EtcdClientPort, cfg.EtcdPeerPort, cfg.ControllerManagerPort, cfg.SchedulerPort); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	t0 := time.Now()
	if err := c.ensurePKI(); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if err := c.writeKubeconfigs(); err != nil {
		return nil, err
	}
	if c.Admin, err = clientcmd.BuildConfigFromFlags("", c.KubeconfigPath()); err != nil {
		return nil, fmt.Errorf("admin kubeconfig: %w", err)
	}
	if cfg.NetNS != "" {
		c.Admin.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netns.DialIn(ctx, cfg.NetNS, network, addr)
		}
	}
	c.Admin.QPS, c.Admin.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.Admin); err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}

	etcd, err := c.start("etcd", c.etcdArgs())
	if err != nil {
		return nil, err
	}
	apiserver, err := c.start("kube-apiserver", c.apiserverArgs())
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, apiserver, etcd); err != nil {
		return nil, err
	}
	c.Timings.Readyz = time.Since(t0)
	c.log.Info("apiserver ready", "endpoint", c.Endpoint, "after", c.Timings.Readyz.Round(time.Millisecond))
	// The controller manager exits when the apiserver is not serving yet, so it starts only now, with the scheduler.
	kcm, err := c.start("kube-controller-manager", c.controllerManagerArgs())
	if err != nil {
		return nil, err
	}
	if _, err := c.start("kube-scheduler", c.schedulerArgs()); err != nil {
		return nil, err
	}
	if err := c.provision(ctx); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	// A signed cluster-info proves the controller manager's controllers run; nodes need that signature.
	if _, err := c.ensureJoinToken(ctx, kcm); err != nil {
		return nil, err
	}
	c.Timings.Up = time.Since(t0)
	c.log.Info("control plane up", "endpoint", c.Endpoint, "after", c.Timings.Up.Round(time.Millisecond))
	return c, nil
}

func checkPortsFree(addr netip.Addr, ports ...int) error {
	var errs []error
	for _, p := range ports {
		for _, a := range []string{addr.String(), "127.0.0.1"} {
			l, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(p)))
			if err != nil {
				errs = append(errs, fmt.Errorf("port %s:%d is in use by a process berth did not start (free it or choose another port): %w", a, p, err))
				break
			}
			l.Close()
		}
	}
	return errors.Join(errs...)
}

func (c *ControlPlane) path(parts ...string) string {
	return filepath.Join(append([]string{c.cfg.Dir}, parts...)...)
}

// KubeconfigPath is the cluster-admin kubeconfig.
func (c *ControlPlane) KubeconfigPath() string { return c.path("admin.conf") }

// CACertPath is the cluster CA certificate.
func (c *ControlPlane) CACertPath() string { return c.pki("ca.crt") }

// LogPath is the log file of a component (one of Components).
func (c *ControlPlane) LogPath(component string) string { return c.procs.LogPath(component) }

// Config returns the configuration in effect, defaults filled in.
func (c *ControlPlane) Config() Config { return c.cfg }

func (c *ControlPlane) start(name string, args []string) (*proc.Process, error) {
	path := filepath.Join(c.cfg.BinDir, name)
	if c.cfg.NetNS != "" {
		path, args = "nsenter", append([]string{"--net=" + c.cfg.NetNS, "--", path}, args...)
	}
	return c.procs.Start(name, path, args...)
}

// Stop stops the control plane: the apiserver and controller manager in parallel, then etcd (an apiserver that
// loses etcd mid-shutdown hangs until it is killed). It waits for every process to exit.
func (c *ControlPlane) Stop() error {
	var front, back []*proc.Process
	for _, p := range c.procs.Take() {
		if p.Name == "etcd" {
			back = append(back, p)
		} else {
			front = append(front, p)
		}
	}
	return errors.Join(proc.StopAll(front, 15*time.Second), proc.StopAll(back, 15*time.Second))
}

// Down stops a detached control plane that an earlier process started in dir: the apiserver and controller
// manager first, then etcd, as Stop does.
func Down(dir string, reg proc.Registry) (int, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, err
	}
	front, err := reg.Stop(func(r proc.Record) bool { return r.Group == abs && r.Name != "etcd" }, 15*time.Second)
	if err != nil {
		return len(front), err
	}
	back, err := reg.StopGroup(abs, 15*time.Second)
	return len(front) + len(back), err
}

func (c *ControlPlane) etcdArgs() []string {
	// etcd serves only the apiserver, always on the namespace's loopback.
	client := "http://127.0.0.1:" + strconv.Itoa(c.cfg.EtcdClientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(c.cfg.EtcdPeerPort)
	return []string{
		"--name=default", "--data-dir=" + c.path("etcd"),
		"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer, "--unsafe-no-fsync", "--log-level=warn",
	}
}

func (c *ControlPlane) apiserverArgs() []string {
	// The kubernetes Service's endpoints are the apiserver's advertised address, as a hosted control plane
	// publishes them (pods such as CoreDNS reach the API through that Service). The reconciler refuses a loopback
	// address, and pods could not reach one anyway: on loopback there are none.
	reconciler := "lease"
	if c.cfg.BindAddress.IsLoopback() {
		reconciler = "none"
	}
	return []string{
		"--bind-address=" + c.cfg.BindAddress.String(), "--advertise-address=" + c.cfg.BindAddress.String(),
		"--secure-port=" + strconv.Itoa(c.cfg.APIServerPort),
		"--endpoint-reconciler-type=" + reconciler,
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(c.cfg.EtcdClientPort),
		"--client-ca-file=" + c.pki("ca.crt"),
		"--tls-cert-file=" + c.pki("apiserver.crt"), "--tls-private-key-file=" + c.pki("apiserver.key"),
		"--kubelet-client-certificate=" + c.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + c.pki("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--enable-bootstrap-token-auth=true",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc." + c.cfg.ClusterDomain,
		"--service-account-key-file=" + c.pki("sa.pub"), "--service-account-signing-key-file=" + c.pki("sa.key"),
		"--service-cluster-ip-range=" + c.serviceRanges(),
		"--allow-privileged=true",
		"--requestheader-client-ca-file=" + c.pki("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--proxy-client-cert-file=" + c.pki("front-proxy-client.crt"), "--proxy-client-key-file=" + c.pki("front-proxy-client.key"),
		"--cert-dir=" + c.path("apiserver-certs"), "--profiling=false",
	}
}

// serviceRanges is the apiserver's --service-cluster-ip-range: the IPv4 range, and the IPv6 one if dual-stack.
func (c *ControlPlane) serviceRanges() string {
	if c.cfg.ServiceCIDRv6.IsValid() {
		return c.cfg.ServiceCIDR.String() + "," + c.cfg.ServiceCIDRv6.String()
	}
	return c.cfg.ServiceCIDR.String()
}

func (c *ControlPlane) controllerManagerArgs() []string {
	kc := c.path("controller-manager.conf")
	args := []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(c.cfg.ControllerManagerPort),
		"--leader-elect=false", "--controllers=" + strings.Join(Controllers, ","),
		"--cluster-signing-cert-file=" + c.pki("ca.crt"), "--cluster-signing-key-file=" + c.pki("ca.key"),
		"--root-ca-file=" + c.pki("ca.crt"), "--service-account-private-key-file=" + c.pki("sa.key"),
		"--use-service-account-credentials=true",
		"--allocate-node-cidrs=true", "--cluster-cidr=" + c.cfg.ClusterCIDR.String(),
		"--node-cidr-mask-size=" + strconv.Itoa(c.cfg.NodeCIDRMaskSize),
		"--service-cluster-ip-range=" + c.cfg.ServiceCIDR.String(),
		"--requestheader-client-ca-file=" + c.pki("front-proxy-ca.crt"),
		"--cert-dir=" + c.path("controller-manager-certs"), "--profiling=false",
	}
	if c.cfg.NodeMonitorGracePeriod > 0 {
		args = append(args, "--node-monitor-grace-period="+c.cfg.NodeMonitorGracePeriod.String())
	}
	return args
}

func (c *ControlPlane) schedulerArgs() []string {
	kc := c.path("scheduler.conf")
	return []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(c.cfg.SchedulerPort), "--leader-elect=false",
		"--cert-dir=" + c.path("scheduler-certs"), "--profiling=false",
	}
}

// writeKubeconfigs writes admin.conf, controller-manager.conf and scheduler.conf (client certificates embedded,
// 0600).
func (c *ControlPlane) writeKubeconfigs() error {
	for _, kc := range []struct{ file, cert, user string }{
		{"admin.conf", "admin", "berth-admin"},
		{"controller-manager.conf", "controller-manager", "system:kube-controller-manager"},
		{"scheduler.conf", "scheduler", "system:kube-scheduler"},
	} {
		if err := c.writeKubeconfig(c.path(kc.file), c.Endpoint, kc.user, c.pki(kc.cert+".crt"), c.pki(kc.cert+".key")); err != nil {
			return err
		}
	}
	return nil
}

func (c *ControlPlane) writeKubeconfig(path, server, user, certFile, keyFile string) error {
	ca, err := os.ReadFile(c.pki("ca.crt"))
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["berth"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["berth"] = &clientcmdapi.Context{Cluster: "berth", AuthInfo: user}
	cfg.CurrentContext = "berth"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeSecret(path, data)
}

// waitReady polls /readyz until it answers ok, failing early (with the log tail) if a component exits.
func (c *ControlPlane) waitReady(ctx context.Context, watch ...*proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	rc := c.Client.Discovery().RESTClient()
	var last error
	for {
		for _, p := range watch {
			select {
			case <-p.Exited():
				return fmt.Errorf("%s exited while waiting for the apiserver (%v); last log lines:\n%s", p.Name, p.ExitErr(), proc.Tail(p.Log, 20))
			default:
			}
		}
		body, err := rc.Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("apiserver at %s not ready: %v (last error: %v); apiserver log:\n%s", c.Endpoint, ctx.Err(), last, proc.Tail(c.LogPath("kube-apiserver"), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
