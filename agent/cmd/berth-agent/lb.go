package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	lbv1 "berth.dev/berth/agent/api/lb/v1alpha1"
	"berth.dev/berth/agent/configcheck"
	"berth.dev/berth/agent/lb/announce"
	"berth.dev/berth/agent/lb/controller"
	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/host"
	"berth.dev/berth/agent/lb/ipam"
	"berth.dev/berth/agent/lb/lbmetrics"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/lb/probe"
	"berth.dev/berth/internal/node/layout"
)

// lbCmd is the load balancer's commands: validate a LoadBalancerConfig, or run the controller.
func lbCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "validate":
		return configcheck.ValidateCmd("berth-agent lb validate", args[1:], stdout, stderr, lbv1.Decode, (*lbv1.LoadBalancerConfig).Validate)
	case "controller":
		return lbControllerCmd(args[1:], stderr)
	case "host":
		return lbHostCmd(args[1:], stderr)
	}
	fmt.Fprint(stderr, usage)
	return exitUsage
}

// lbControllerCmd runs the controller until SIGTERM (exit 0) or until it loses its lease (exit 1: its supervisor
// starts a new candidate).
func lbControllerCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent lb controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "LoadBalancerConfig file (required)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the control plane (default: in-cluster)")
	identity := fs.String("identity", "", "this candidate's identity in the leader election (default: hostname_random)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	if *file == "" {
		fmt.Fprintln(stderr, "berth-agent lb controller: -config FILE is required")
		return exitUsage
	}
	c, cs, code := lbSetup(*file, *kubeconfig, stderr)
	if code != exitOK {
		return code
	}
	if *identity == "" {
		*identity = candidateIdentity()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := controller.Run(ctx, controllerConfig(c, cs, *identity, slog.New(slog.NewTextHandler(stderr, nil))))
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInternal
	}
	return exitOK
}

// controllerConfig converts a validated LoadBalancerConfig into the controller's input.
func controllerConfig(c *lbv1.LoadBalancerConfig, cs kubernetes.Interface, identity string, log *slog.Logger) controller.Config {
	cfg := controller.Config{Client: cs, ClassName: c.Spec.ClassName, DefaultClass: c.Spec.DefaultClass,
		PoolAnnotation: lbv1.PoolAnnotation, AddressAnnotation: lbv1.AddressAnnotation, Identity: identity, Log: log}
	if cfg.ClassName == "" {
		cfg.ClassName = lbv1.DefaultClassName
	}
	if c.Spec.Mode == lbv1.ModeDNAT {
		cfg.IPMode = corev1.LoadBalancerIPModeProxy
	}
	for _, p := range c.Spec.Pools {
		pool := ipam.Pool{Name: p.Name, AutoAssign: p.AutoAssigns()}
		for _, a := range p.Addresses {
			r, _ := lbv1.ParseRange(a) // validated
			pool.Ranges = append(pool.Ranges, ipam.Range{First: r.First, Last: r.Last})
		}
		cfg.Pools = append(cfg.Pools, pool)
	}
	return cfg
}

// lbSetup reads and checks the LoadBalancerConfig and connects to the control plane.
func lbSetup(file, kubeconfig string, stderr io.Writer) (*lbv1.LoadBalancerConfig, kubernetes.Interface, int) {
	c, code := configcheck.Check(file, stderr, lbv1.Decode, (*lbv1.LoadBalancerConfig).Validate)
	if code != exitOK {
		return nil, nil, code
	}
	cs, err := kubeClient(kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return nil, nil, exitInvalidConfig
	}
	return c, cs, exitOK
}

// kubeClient connects to the control plane with kubeconfig, or in-cluster when it is "" (the pod's
// ServiceAccount), each request limited to 30 s.
func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.Timeout = 30 * time.Second
	return kubernetes.NewForConfig(rc)
}

// candidateIdentity is a leader-election candidate's default identity: the hostname and a random suffix, so two
// candidates on one host (or two pods of one name, one going, one coming) never share one.
func candidateIdentity() string {
	hostname, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return hostname + "_" + hex.EncodeToString(b)
}

// lbHostCmd runs the LB host role: berth's nftables table on this host, kept in line with the cluster, until
// SIGTERM (exit 0).
func lbHostCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent lb host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "LoadBalancerConfig file (required)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the control plane (default: in-cluster)")
	iface := fs.String("interface", "", "interface the clients reach the frontend IPs on: this host answers ARP there for the frontend IPs it owns among the live LB hosts (default: no announcing; the network routes the frontend range to this host)")
	identity := fs.String("identity", "", "this LB host's name among the LB hosts, a DNS label (default: the hostname)")
	metricsAddr := fs.String("metrics-address", "127.0.0.1:9470", "where /metrics is served (Prometheus); \":9470\" for every interface, \"\" for none")
	statusFile := fs.String("status-file", layout.LBHostStatus, "the role's status file, which berth-agent status shows")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	if *file == "" {
		fmt.Fprintln(stderr, "berth-agent lb host: -config FILE is required")
		return exitUsage
	}
	if *identity == "" {
		hostname, _ := os.Hostname()
		*identity = strings.ToLower(strings.SplitN(hostname, ".", 2)[0])
	}
	if msgs := validation.IsDNS1123Label(*identity); len(msgs) > 0 {
		fmt.Fprintf(stderr, "berth-agent lb host: -identity %q: %s\n", *identity, strings.Join(msgs, "; "))
		return exitUsage
	}
	c, cs, code := lbSetup(*file, *kubeconfig, stderr)
	if code != exitOK {
		return code
	}
	nft, err := dataplane.Open(-1)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInternal
	}
	routes, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: netlink: %v\n", err)
		return exitInternal
	}
	defer routes.Close()
	mode := dataplane.FloatingIP
	if c.Spec.Mode == lbv1.ModeDNAT {
		mode = dataplane.DNAT
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := forwarding(*iface); err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInternal
	}
	var ann *announce.Announcer
	if *iface != "" {
		ifi, err := net.InterfaceByName(*iface)
		if err != nil {
			fmt.Fprintf(stderr, "berth-agent lb host: -interface: %v\n", err)
			return exitUsage
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			fmt.Fprintf(stderr, "berth-agent: ARP on %s: %v\n", *iface, err)
			return exitInternal
		}
		defer c.Close()
		ann, err = announce.New(announce.MembersConfig{Client: cs, Identity: *identity, Log: log}, announce.NewSpeaker(c, log))
		if err != nil {
			fmt.Fprintf(stderr, "berth-agent: %v\n", err)
			return exitInternal
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	class := lbsvc.Class{Name: c.Spec.ClassName, Default: c.Spec.DefaultClass}
	if class.Name == "" {
		class.Name = lbv1.DefaultClassName
	}
	reg := metricsRegistry()
	metrics := lbmetrics.New(reg)
	stopMetrics, err := serveMetrics(*metricsAddr, reg)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent lb host: -metrics-address: %v\n", err)
		return exitUsage
	}
	defer stopMetrics()
	if err := host.Run(ctx, host.Config{Identity: *identity, StatusFile: *statusFile, Metrics: metrics, Client: cs, Class: class, NFT: nft, Mode: mode, Routes: routes, Announce: ann, Log: log,
		Probe: probe.Config{Interval: c.Spec.Health.Interval.Duration, Threshold: c.Spec.Health.Threshold}}); err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInternal
	}
	return exitOK
}

// forwarding makes this host forward (the LB host routes every frontend packet on) and, as it forwards out of the
// interface a packet came in on, send no ICMP redirects there, which would tell clients to go to a node directly.
func forwarding(iface string) error {
	files := []string{"net/ipv4/ip_forward"}
	zero := []string{"net/ipv4/conf/all/send_redirects"}
	if iface != "" {
		zero = append(zero, "net/ipv4/conf/"+iface+"/send_redirects")
	}
	for _, f := range files {
		if err := os.WriteFile("/proc/sys/"+f, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", f, err)
		}
	}
	for _, f := range zero {
		if err := os.WriteFile("/proc/sys/"+f, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", f, err)
		}
	}
	return nil
}
