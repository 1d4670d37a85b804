#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries and etcd into a cache outside the repository and prints the bin directory.
#
#   cache: ${BERTH_CACHE:-$HOME/.cache/berth}/k8s/v<version>-<hash of go.mod, go.sum, go version>/bin
#
# Only the first run on a machine pays for the build (about 5-7 minutes on 2 cores). The build runs under a lock
# (flock) into a temporary directory that is renamed into place, so parallel callers never see half a cache and a
# killed build leaves nothing that looks complete.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
V=$(sed -n 's/^[[:space:]]*k8s.io\/kubernetes v\([0-9.]*\)$/\1/p' "$here/go.mod" | head -n1)
[ -n "$V" ] || { echo "build.sh: cannot read the k8s.io/kubernetes version from $here/go.mod" >&2; exit 1; }
minor=$(echo "$V" | cut -d. -f2)
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" <(go version) | sha256sum | cut -c1-12)
root=${BERTH_CACHE:-$HOME/.cache/berth}/k8s
dest=$root/v$V-$key
bins="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl"

complete() { [ -f "$dest/.complete" ]; }
if complete; then echo "$dest/bin"; exit 0; fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if complete; then echo "$dest/bin"; exit 0; fi

tmp=$(mktemp -d "$root/.build-v$V.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/bin"
echo "build.sh: building Kubernetes v$V and etcd into $dest (first run on this machine: several minutes)" >&2
ld="-s -w -X k8s.io/component-base/version.gitVersion=v$V -X k8s.io/component-base/version.gitMajor=1"
ld="$ld -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=v$V"
ld="$ld -X k8s.io/component-base/version.gitTreeState=clean"
cd "$here"
pkgs=""
for b in $bins; do pkgs="$pkgs k8s.io/kubernetes/cmd/$b"; done
# shellcheck disable=SC2086
CGO_ENABLED=0 GOFLAGS="-p=${BUILD_PARALLELISM:-2} -mod=readonly" go build -trimpath -ldflags "$ld" -o "$tmp/bin/" $pkgs
CGO_ENABLED=0 GOFLAGS="-mod=readonly" go build -trimpath -ldflags "-s -w" -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3
for b in $bins etcd; do [ -x "$tmp/bin/$b" ] || { echo "build.sh: $b was not built" >&2; exit 1; }; done
echo "v$V" > "$tmp/VERSION"
touch "$tmp/.complete"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest/bin"
