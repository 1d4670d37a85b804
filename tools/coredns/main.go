// Command coredns is CoreDNS with the plugins a cluster DNS needs (those of kubeadm's default Corefile), for the
// local cloud's cluster DNS. It is a separate module so the product's go.mod never pulls CoreDNS' dependency graph;
// build it with ../build.sh coredns. Leaving out the other plugins (cloud DNS providers, etcd, dnstap, ...) keeps
// the binary, its build and the node image small.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// directives are the compiled-in plugins in CoreDNS' execution order (core/dnsserver/zdirectives.go).
var directives = []string{"reload", "ready", "health", "prometheus", "errors", "log", "loadbalance", "cache", "hosts",
	"kubernetes", "loop", "forward"}

func main() {
	dnsserver.Directives = directives
	coremain.Run()
}
