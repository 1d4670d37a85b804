# berth — set-up and tasks. Every target installs what it needs, idempotently, on a fresh Debian 12 machine.
#
#   make demo    the main job: bake the node image, bring up the local cloud with two nodes that join it, and
#                serve a workload through either node
#   make test    everything CI runs (.ci/run calls it)
#   make unit    the unit tier: no root, no namespaces, no Kubernetes binaries, no qemu (go test -short)
#   make e2e     only the end-to-end suite: baked images booted under qemu, joined, serving (also part of make test)
#   make down    stop what `make demo` started
#   make bench   benchmarks (docs/benchmarks.md records their figures)

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
# One build configuration for everything berth compiles of its own, here and in what the tests build (go vet, the
# unit runs, the test binaries, the agent, berth-dev, the plugin, the images' binaries): static, as images ship the
# agent, with -trimpath and no DWARF. Go's build cache then compiles each dependency once, not once per
# configuration (a cold `make test` compiled client-go, containerd and the Packer SDK twice before).
export CGO_ENABLED := 0
export GOFLAGS := -trimpath -gcflags=all=-dwarf=false $(GOFLAGS)

# apt packages the tests and tools run for real: containerd + runc + CNI plugins for the node helper and image
# pre-caching, busybox for test images, iproute2/util-linux for namespaces; mmdebstrap, e2fsprogs, fdisk, GRUB,
# qemu and genisoimage to bake and boot node images; systemd-container (systemd-nspawn) for the systemd tier;
# socat to forward a guest's connections to the control plane on loopback; nftables for the LB benchmark beside
# kube-proxy; systemd-journal-remote to write real journal files for the log shipper's journal tests.
APT_PACKAGES := containerd runc containernetworking-plugins busybox-static iproute2 util-linux ca-certificates \
	mmdebstrap e2fsprogs fdisk grub-pc-bin grub2-common qemu-system-x86 qemu-utils genisoimage systemd-container \
	socat nftables systemd-journal-remote victoria-metrics samba nfs-ganesha nfs-ganesha-vfs
GO_MIN := 1.26
BERTH_CACHE ?= $(HOME)/.cache/berth
# The pinned tools (tools/<name>, built by tools/build.sh), longest first.
TOOLS := k8s packer coredns otelcol runtime victorialogs packer-sdc csi-sanity
DEV_BIN := $(BERTH_CACHE)/bin/berth-dev
AGENT_BIN := $(BERTH_CACHE)/bin/berth-agent
LOGS_BIN := $(BERTH_CACHE)/bin/berth-logs
TEST_TIMEOUT ?= 40m
# make plugin: where Packer looks for plugins (its default on Linux; PACKER_PLUGIN_PATH overrides it for both),
# where the pinned packer is linked, and the pause image it writes.
PACKER_PLUGIN_PATH ?= $(HOME)/.config/packer/plugins
BINDIR ?= /usr/local/bin
PLUGIN_VERSION := $(shell sed -n 's/^\tVersion = "\(.*\)"$$/\1/p' imagebuilder/version/version.go)
PLUGIN_BIN := $(PACKER_PLUGIN_PATH)/github.com/berth-dev/berth/packer-plugin-berth_v$(PLUGIN_VERSION)_x5.0_linux_amd64
PAUSE_TAR := $(BERTH_CACHE)/images/pause.oci.tar
LOGS_TAR := $(BERTH_CACHE)/images/berth-logs.oci.tar
AGENT_TAR := $(BERTH_CACHE)/images/berth-agent.oci.tar

.PHONY: all deps go-check tools $(addprefix tool-,$(TOOLS)) agent agent-image logs-image plugin pause-image deb generate demo down test unit unit-nocaps e2e lint bench clean-cache

all: test

# link_pinned,<tool>,<link>: links berth's pinned build of a tool (a path in the tool cache) as <link>, unless
# something that is not one of berth's pinned builds is there already, which is left alone with a warning. Shell
# text for one recipe line; says what it did on stderr.
define link_pinned
cur=$$(readlink $(2) || true); \
	  if [ -e $(2) ] && [ "$${cur#$(BERTH_CACHE)/}" = "$$cur" ]; then \
	    echo "warning: $(2) is not berth's pinned $(notdir $(2)); left alone (berth's is $(1))" >&2; \
	  else mkdir -p $(dir $(2)) && ln -sfn $(1) $(2) && echo "$(notdir $(2)): $(2) -> $(1)" >&2; fi
endef

go-check:
	@command -v go >/dev/null || { echo "Go $(GO_MIN)+ is required (expected at /usr/local/go)"; exit 1; }
	@v=$$(go env GOVERSION | sed 's/^go//'); \
	  if [ "$$(printf '%s\n' "$(GO_MIN)" "$$v" | sort -V | head -n1)" != "$(GO_MIN)" ]; then \
	    echo "Go $(GO_MIN)+ is required, found $$v"; exit 1; fi

# Installs missing apt packages without starting any daemon they ship (containerd's unit stays stopped: tests run
# their own containerd in a private mount namespace).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  guard=""; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
	  ( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing ); rc=$$?; \
	  [ -n "$$guard" ] && rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

# Pinned tools, each built once per machine into $(BERTH_CACHE)/<tool> (tools/build.sh): Kubernetes v1.37.2 +
# etcd, CoreDNS v1.13.1 (the local cloud's cluster DNS), Packer v1.9.4, packer-sdc v0.6.10, the static runtime
# (containerd v2.3.2, runc v1.4.3, CNI v1.8.0), VictoriaLogs v1.52.2 and the OpenTelemetry Collector v0.165.0 (the
# log shipper's backends and peer).
# Each is a target of its own (tool-<name>), so `make -j` builds them side by side: one build's downloads and
# links leave a core idle that another's compiles take. Kubernetes, the longest, is named first.
tools: go-check $(addprefix tool-,$(TOOLS))
$(addprefix tool-,$(TOOLS)): tool-%: go-check
	@echo "$*: $$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh $*)"

# The berth-agent binary images ship (static, so one binary fits every distro profile); prints its path.
agent: go-check
	@mkdir -p $(dir $(AGENT_BIN))
	@CGO_ENABLED=0 go build -trimpath -o $(AGENT_BIN) ./agent/cmd/berth-agent
	@echo $(AGENT_BIN)

# The agent's image (berth.dev/berth-agent, which berth-agent writes of itself; deploy/shares.yaml's provisioner
# runs it) for a bake's images list, so node images pre-cache it; prints the image's path.
agent-image: agent
	@mkdir -p $(dir $(AGENT_TAR))
	@$(AGENT_BIN) image -o $(AGENT_TAR)

# The log shipper, berth-logs (static; the berth-logs DaemonSet of deploy/logs.yaml runs it), and its image
# (berth.dev/berth-logs, which berth-logs writes of itself) for a bake's images list, so node images pre-cache it;
# prints the image's path.
logs-image: go-check
	@mkdir -p $(dir $(LOGS_BIN)) $(dir $(LOGS_TAR))
	@CGO_ENABLED=0 go build -trimpath -o $(LOGS_BIN) ./agent/cmd/berth-logs
	@$(LOGS_BIN) image -o $(LOGS_TAR)

# Everything `packer build packer/debian-12.pkr.hcl` needs besides the agent and the Kubernetes binaries: the
# plugin, built and installed the way `packer plugins install` lays it out (binary + _SHA256SUM under
# $(PACKER_PLUGIN_PATH)/github.com/berth-dev/berth, where the template's required_plugins finds it); the pinned
# Packer v1.9.4 linked as $(BINDIR)/packer (an existing packer that is not this link is left alone, with a
# warning); and the pause image written to $(PAUSE_TAR). Says what it did on stderr; prints the pause image's path.
plugin: go-check
	@echo "building packer-plugin-berth v$(PLUGIN_VERSION) into $(dir $(PLUGIN_BIN))" >&2
	@mkdir -p $(dir $(PLUGIN_BIN)) $(dir $(PAUSE_TAR)) $(BERTH_CACHE)/bin
	@go build -trimpath -o $(PLUGIN_BIN).tmp ./imagebuilder && mv $(PLUGIN_BIN).tmp $(PLUGIN_BIN)
	@sha256sum $(PLUGIN_BIN) | cut -d' ' -f1 > $(PLUGIN_BIN)_SHA256SUM
	@echo "building (or finding) the pinned Packer" >&2
	@packer=$$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh packer)/packer; $(call link_pinned,$$packer,$(BINDIR)/packer)
	@$(MAKE) -s pause-image

# The pause image (berth.dev/pause, the agent's default sandbox image), which berth-pause writes of itself.
pause-image: go-check
	@mkdir -p $(dir $(PAUSE_TAR)) $(BERTH_CACHE)/bin
	@CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o $(BERTH_CACHE)/bin/berth-pause ./imagebuilder/cmd/berth-pause
	@$(BERTH_CACHE)/bin/berth-pause image -o $(PAUSE_TAR)

# The agent's Debian package (binary and units; the image builder installs the same package), for installing by
# hand on an existing machine; prints its path.
deb: agent $(DEV_BIN)
	@$(DEV_BIN) deb -agent $(AGENT_BIN) -o $(BERTH_CACHE)/deb

# Regenerates the plugin's packer-sdc outputs (hcl2 spec, docs partials, rendered docs) and the NodeConfig
# and LoadBalancerConfig references (docs/nodeconfig.md, docs/lbconfig.md, from the APIs' doc comments).
generate: go-check
	BERTH_CACHE=$(BERTH_CACHE) imagebuilder/generate.sh
	go run ./cmd/apidocs -pkg agent/api/v1alpha1 -root NodeConfig -o docs/nodeconfig.md
	go run ./cmd/apidocs -pkg agent/api/lb/v1alpha1 -root LoadBalancerConfig -o docs/lbconfig.md
	go run ./cmd/apidocs -pkg agent/api/logs/v1alpha1 -root LogShipperConfig -o docs/logsconfig.md

$(DEV_BIN): go-check $(shell find cmd agent imagebuilder internal cloud-init systemd -type f -not -name '*_test.go') go.mod go.sum
	@mkdir -p $(dir $@)
	go build -o $@ ./cmd/berth-dev

# It builds only the tools it runs (Kubernetes, CoreDNS and VictoriaLogs, the cloud's log backend; Packer, packer-sdc and the static runtime are not
# needed), and links the pinned kubectl as $(BINDIR)/kubectl unless another kubectl is there (left alone, with a
# warning). A second run reuses what it can: the image when its inputs are unchanged (a new bake replaces the file
# by rename, so running guests keep theirs), and the running cloud when it came up from that same image file.
demo: deps go-check agent logs-image pause-image $(DEV_BIN)
	@set -e; \
	  k8s=$$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh k8s); coredns=$$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh coredns); \
	  vlogs=$$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh victorialogs); \
	  $(call link_pinned,$$k8s/kubectl,$(BINDIR)/kubectl); \
	  export BERTH_K8S_BIN=$$k8s BERTH_COREDNS_BIN=$$coredns BERTH_VICTORIALOGS_BIN=$$vlogs; \
	  image=$$($(DEV_BIN) image -agent $(AGENT_BIN) -logs $(LOGS_BIN) -pause $(PAUSE_TAR)); \
	  $(DEV_BIN) cloud up -reuse -image $$image -nodes 2 -agent $(AGENT_BIN); \
	  $(DEV_BIN) cloud demo

down: $(DEV_BIN)
	$(DEV_BIN) cloud down
	$(DEV_BIN) controlplane down

lint: go-check
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	BERTH_CACHE=$(BERTH_CACHE) imagebuilder/generate.sh --check
	go run ./cmd/apidocs -pkg agent/api/v1alpha1 -root NodeConfig -o docs/nodeconfig.md -check
	go run ./cmd/apidocs -pkg agent/api/lb/v1alpha1 -root LoadBalancerConfig -o docs/lbconfig.md -check
	go run ./cmd/apidocs -pkg agent/api/logs/v1alpha1 -root LogShipperConfig -o docs/logsconfig.md -check

# make test (CI): its first steps overlap: the pinned tools build (cold, about half an hour, much of it linking and downloading,
# which leave a core idle) while lint and the capability-free unit tier compile and run.
test: deps
	@$(MAKE) --no-print-directory -j4 lint unit-nocaps tools
	BERTH_K8S_BIN=$$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh k8s) go test -count=1 -timeout $(TEST_TIMEOUT) $(LONG_TESTS) ./...

# The packages whose tests take longest (qemu guests), named first so that go test starts them first: two run at a
# time, and one started last would run alone at the end.
LONG_TESTS := ./test/e2e ./cmd/berth-dev ./packer ./test/shares ./imagebuilder/bake

# The unit tier: every test that needs no root, network namespace, Kubernetes binaries, qemu, systemd-nspawn or
# Packer (each of those calls test/tier.Require, which skips it under -short). Runs as any user; make test runs
# these and every slower tier.
unit: go-check
	go test -short -count=1 ./...

# The unit tier with every capability dropped (setpriv: none inherited, ambient or in the bounding set, no new
# privileges), which is what running as an unprivileged user takes away; make test runs it (CI runs as root), so a
# unit test that needs privilege fails there.
unit-nocaps: go-check
	setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs -- go test -short -count=1 ./...

# The end-to-end suite on real guests: the e2e join (user network; SIGKILLs in every phase), the local cloud (two
# nodes, pod traffic across them, NodePort, a killed node) and berth-dev cloud as make demo runs it.
e2e: deps tools
	BERTH_K8S_BIN=$$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh k8s) go test -count=1 -timeout $(TEST_TIMEOUT) \
	  -run 'TestJoinInQemu|TestCloud' ./test/e2e ./internal/dev/cloud ./cmd/berth-dev

bench: deps tools
	BERTH_K8S_BIN=$$(BERTH_CACHE=$(BERTH_CACHE) tools/build.sh k8s) go test -run '^$$' -bench . -benchtime 5x ./internal/dev/controlplane ./agent/lb/... $$(go list ./test/... | grep -v -e /test/e2e)
	go test -run '^$$' -bench Bake -benchtime 1x -timeout 40m ./imagebuilder/bake
	go test -run '^$$' -bench WriteAgentDeb -benchtime 3x ./imagebuilder/deb
	go test -run '^$$' -bench JoinBerthVsKubeadm -benchtime 1x -count 2 -timeout 60m ./test/e2e
	go test -run '^$$' -bench BootToReady -benchtime 1x -timeout 40m ./internal/dev/cloud
	go test -run '^$$' -bench ShipVsCollector -benchtime 1x -timeout 40m ./agent/cmd/berth-logs

clean-cache:
	rm -rf $(BERTH_CACHE)
