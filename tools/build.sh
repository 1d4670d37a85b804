#!/usr/bin/env bash
# Builds a pinned tool from the Go module proxy into a cache outside the repository and prints its bin directory.
#
#   tools/build.sh k8s      Kubernetes v1.37.2 binaries + etcd (tools/k8s)
#   tools/build.sh packer   Packer v1.9.4 (tools/packer)
#
#   cache: ${BERTH_CACHE:-$HOME/.cache/berth}/<tool>/v<version>-<hash of go.mod, go.sum, build.inc, this script, go version>/bin
#
# Each tool directory is a Go module with a build.inc that sets VERSION and BINS and defines build_into <bin dir>.
# Only the first run on a machine pays for the build. It runs under a lock (flock) into a temporary directory that
# is renamed into place, so parallel callers never see half a cache and a killed build leaves nothing complete.
set -euo pipefail
tool=${1:?usage: tools/build.sh <tool>}
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
here=$(cd "$(dirname "$0")/$tool" && pwd)
cd "$here"
# shellcheck source=/dev/null
source ./build.inc
key=$(cat go.mod go.sum build.inc "$self" <(go version) | sha256sum | cut -c1-12)
root=${BERTH_CACHE:-$HOME/.cache/berth}/$tool
dest=$root/v$VERSION-$key

complete() { [ -f "$dest/.complete" ]; }
if complete; then echo "$dest/bin"; exit 0; fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if complete; then echo "$dest/bin"; exit 0; fi

tmp=$(mktemp -d "$root/.build-v$VERSION.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
mkdir -p "$tmp/bin"
echo "tools/build.sh: building $tool v$VERSION into $dest (first run on this machine)" >&2
build_into "$tmp/bin"
for b in $BINS; do [ -x "$tmp/bin/$b" ] || { echo "tools/build.sh: $b was not built" >&2; exit 1; }; done
echo "v$VERSION" > "$tmp/VERSION"
touch "$tmp/.complete"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest/bin"
