// Package toolbin finds the pinned tools that tools/build.sh builds from the module proxy and caches: Kubernetes
// v1.37.2 with etcd, Packer v1.9.4, CoreDNS v1.13.1, the static container runtime, VictoriaLogs v1.52.2 and an OpenTelemetry Collector v0.165.0. It runs that script, which returns at once when the cache is complete and
// builds under a lock otherwise, so tests on a fresh machine need no manual step. The tools are a real
// prerequisite: when they cannot be had, tests fail instead of skipping.
package toolbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"berth.dev/berth/test/tier"
)

// Tool is one of the directories under tools/.
type Tool struct {
	name string // tools/<name>
	env  string // overrides the directory
	need tier.Need
}

var (
	// Kubernetes is kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubelet, kubeadm,
	// kubectl and etcd ($BERTH_K8S_BIN overrides).
	Kubernetes = &Tool{name: "k8s", env: "BERTH_K8S_BIN", need: tier.Kubernetes}
	// Packer is the packer binary ($BERTH_PACKER_BIN overrides).
	Packer = &Tool{name: "packer", env: "BERTH_PACKER_BIN", need: tier.Packer}
	// PackerSDC is the SDK's generator and checker ($BERTH_PACKER_SDC_BIN overrides).
	PackerSDC = &Tool{name: "packer-sdc", env: "BERTH_PACKER_SDC_BIN", need: tier.Built("packer-sdc")}
	// CoreDNS is the coredns binary of the local cloud's cluster DNS ($BERTH_COREDNS_BIN overrides).
	CoreDNS = &Tool{name: "coredns", env: "BERTH_COREDNS_BIN", need: tier.Built("coredns")}
	// Runtime is static containerd, containerd-shim-runc-v2, ctr, runc and cni/<plugin> ($BERTH_RUNTIME_BIN
	// overrides).
	Runtime = &Tool{name: "runtime", env: "BERTH_RUNTIME_BIN", need: tier.Built("runtime")}
	// VictoriaLogs is victoria-logs, the log backend of the log shipper's tests ($BERTH_VICTORIALOGS_BIN
	// overrides).
	VictoriaLogs = &Tool{name: "victorialogs", env: "BERTH_VICTORIALOGS_BIN", need: tier.Built("victorialogs")}
	// CSISanity is csi-sanity, the CSI conformance suite the share drivers' guest test runs
	// ($BERTH_CSI_SANITY_BIN overrides).
	CSISanity = &Tool{name: "csi-sanity", env: "BERTH_CSI_SANITY_BIN", need: tier.Built("csi-sanity")}
	// OtelCol is the OpenTelemetry Collector (filelog and OTLP receivers, OTLP/HTTP exporter) built with its
	// builder: a backend of the OTLP sink's tests and the peer in the log shipper's benchmarks ($BERTH_OTELCOL_BIN
	// or tools/build.sh otelcol).
	OtelCol = &Tool{name: "otelcol", env: "BERTH_OTELCOL_BIN", need: tier.Built("otelcol")}
)

var cache sync.Map // tool name → result

type result struct {
	once sync.Once
	dir  string
	err  error
}

// Dir returns the directory that holds the tool's binaries.
func (t *Tool) Dir() (string, error) {
	v, _ := cache.LoadOrStore(t.name, &result{})
	r := v.(*result)
	r.once.Do(func() {
		if d := os.Getenv(t.env); d != "" {
			r.dir = d
			return
		}
		root, err := ModuleRoot()
		if err != nil {
			r.err = err
			return
		}
		script := filepath.Join(root, "tools", "build.sh")
		cmd := exec.Command("bash", script, t.name)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			r.err = fmt.Errorf("%s %s: %w", script, t.name, err)
			return
		}
		r.dir = strings.TrimSpace(string(out))
	})
	return r.dir, r.err
}

// ModuleRoot is the directory of berth's go.mod, as the go command finds it from a test's working directory
// (its package directory).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside berth's module: tests find tools/build.sh from it")
	}
	return filepath.Dir(mod), nil
}

// ForTest returns Dir or fails the test; the unit tier skips it (tier.Require).
func (t *Tool) ForTest(tb testing.TB) string {
	tb.Helper()
	tier.Require(tb, t.need)
	d, err := t.Dir()
	if err != nil {
		tb.Fatalf("%s binaries: %v", t.name, err)
	}
	return d
}
