package nodeexporter

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The collectors read this machine's real /proc and /sys: the memory total is /proc/meminfo's, every CPU has its
// seconds, the root filesystem has a size, and only the collectors asked for run. The flags are parsed once: the
// same config again is fine, another is refused.
func TestCollectsThisMachine(t *testing.T) {
	cfg := Config{Root: "/", Collectors: []string{"cpu", "meminfo", "filesystem", "loadavg"}}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	if f := byName["node_memory_MemTotal_bytes"]; f == nil || f.Metric[0].GetGauge().GetValue() != float64(memTotal(t)) {
		t.Errorf("node_memory_MemTotal_bytes = %v, want /proc/meminfo's %d", f, memTotal(t))
	}
	cpus := map[string]bool{}
	for _, m := range byName["node_cpu_seconds_total"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "cpu" {
				cpus[l.GetValue()] = true
			}
		}
	}
	if len(cpus) != runtime.NumCPU() {
		t.Errorf("node_cpu_seconds_total for %d CPUs, want %d", len(cpus), runtime.NumCPU())
	}
	root := false
	for _, m := range byName["node_filesystem_size_bytes"].GetMetric() {
		for _, l := range m.Label {
			root = root || l.GetName() == "mountpoint" && l.GetValue() == "/" && m.GetGauge().GetValue() > 0
		}
	}
	if !root {
		t.Errorf("no node_filesystem_size_bytes for /: %v", byName["node_filesystem_size_bytes"])
	}
	if byName["node_load1"] == nil || byName["node_network_receive_bytes_total"] != nil {
		t.Errorf("node_load1 %v, node_network_receive_bytes_total %v: want the loadavg collector's and not netdev's", byName["node_load1"] != nil, byName["node_network_receive_bytes_total"] != nil)
	}
	if _, err := New(cfg); err != nil {
		t.Errorf("the same config again: %v", err)
	}
	if _, err := New(Config{Root: "/host", Collectors: cfg.Collectors}); err == nil || !strings.Contains(err.Error(), "configured already") {
		t.Errorf("another config in the same process: %v", err)
	}
	if _, err := New(Config{Collectors: []string{"CPU;rm"}}); err == nil || !strings.Contains(err.Error(), `"CPU;rm"`) {
		t.Errorf("a bad collector name: %v", err)
	}
}

func memTotal(t *testing.T) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int64
		if n, _ := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); n == 1 {
			return kb * 1024
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// A collector node_exporter does not have is named in the error. (In a process of its own: the flags are parsed
// once per process.)
func TestUnknownCollector(t *testing.T) {
	if os.Getenv("BERTH_NODEEXPORTER_CHILD") == "1" {
		_, err := New(Config{Collectors: []string{"cpu", "nosuch"}})
		fmt.Print(err)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUnknownCollector$")
	cmd.Env = append(os.Environ(), "BERTH_NODEEXPORTER_CHILD=1")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), `node_exporter collector "nosuch": no such collector`) {
		t.Errorf("an unknown collector: %s", out)
	}
}
