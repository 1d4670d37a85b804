package bake_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/payload"
)

// fakeBinary writes an executable at dir/name that prints out (a stand-in for kubelet --version).
func fakeBinary(t *testing.T, dir, name, out string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+out+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVersionsRefusesAMismatchBeforeBaking(t *testing.T) {
	dir := t.TempDir()
	kubelet := fakeBinary(t, dir, "kubelet", "Kubernetes v1.37.2")
	proxy := fakeBinary(t, dir, "kube-proxy", "Kubernetes v1.36.0")
	s := &bake.Spec{KubernetesVersion: "v1.37.2", Inputs: payload.Inputs{KubeletPath: kubelet, KubeProxyPath: proxy}, Log: slog.New(slog.DiscardHandler)}
	err := bake.Versions(context.Background(), s, &bake.State{})
	if err == nil || !strings.Contains(err.Error(), proxy+` --version says "Kubernetes v1.36.0"`) || !strings.Contains(err.Error(), "kubernetes_version") || strings.Contains(err.Error(), kubelet+" ") {
		t.Errorf("kube-proxy of another version: %v; want its path, what it says and the field named (and nothing about the kubelet)", err)
	}

	s.Inputs.KubeProxyPath = fakeBinary(t, dir, "kube-proxy", "Kubernetes v1.37.2")
	if err := bake.Versions(context.Background(), s, &bake.State{}); err != nil {
		t.Errorf("matching versions: %v", err)
	}

	// A binary this machine cannot run (here: not an executable format at all) is left to the boot check.
	foreign := filepath.Join(dir, "foreign")
	if err := os.WriteFile(foreign, []byte{0x7f, 'X', 'L', 'F', 0, 1, 2, 3}, 0o755); err != nil {
		t.Fatal(err)
	}
	s.Inputs.KubeletPath = foreign
	if err := bake.Versions(context.Background(), s, &bake.State{}); err != nil {
		t.Errorf("a binary of another architecture: %v, want a warning only", err)
	}

	s.Inputs.KubeletPath = filepath.Join(dir, "missing")
	if err := bake.Versions(context.Background(), s, &bake.State{}); err == nil || !strings.Contains(err.Error(), "missing --version") {
		t.Errorf("a missing kubelet: %v", err)
	}
}
