#!/usr/bin/env bash
# Builds a pinned tool from the Go module proxy into a cache outside the repository and prints its bin directory.
#
#   tools/build.sh k8s      Kubernetes v1.37.2 binaries + etcd (tools/k8s)
#   tools/build.sh packer   Packer v1.9.4 (tools/packer)
#
#   cache: ${BERTH_CACHE:-$HOME/.cache/berth}/<tool>/v<version>-<hash of go.mod, go.sum, build.inc, *.go, this script, go version>/bin
#
# Each tool directory is a Go module with a build.inc that sets VERSION and BINS and defines build_into <bin dir>.
# Only the first run on a machine pays for the build. It runs under a lock (flock) into a temporary directory that
# is renamed into place, so parallel callers never see half a cache and a killed build leaves nothing complete.
# Every use touches the cache's .complete; a new build removes the tool's other caches unused for 7 days (old
# versions and keys pile up at half a gigabyte each) and build directories a killed build left.
set -euo pipefail
tool=${1:?usage: tools/build.sh <tool>}
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
here=$(cd "$(dirname "$0")/$tool" && pwd)
cd "$here"
# shellcheck source=/dev/null
source ./build.inc
shopt -s nullglob
key=$(cat go.mod go.sum build.inc ./*.go "$self" <(go version) | sha256sum | cut -c1-12)
root=${BERTH_CACHE:-$HOME/.cache/berth}/$tool
dest=$root/v$VERSION-$key

# progress <label> <total>: a filter for `go build -v` output (on stdin) that prints, every 200 packages compiled,
# how far the build is (total is what `go list -deps` names for its packages: an upper bound, since packages in Go's
# build cache are not compiled again), and passes every other line (downloads, errors) through. Output: stderr.
progress() {
  awk -v label="$1" -v total="$2" '
    /^[[:alnum:]._~\/-]+$/ {
      n++
      if (n % 200 == 0) { printf "tools/build.sh: %s: %d packages compiled (of at most %d)\n", label, n, total; fflush() }
      next
    }
    { print; fflush() }' >&2
}

# The Go flags every tool's go build takes (build.inc: GOFLAGS="$goflags"): go.mod and go.sum as they are, and no
# DWARF: each binary is stripped at link (-s -w) anyway, and not generating it saves about 15% of a cold build's
# compile CPU (measured on k8s.io/api and apimachinery: 162 s user+sys with it, 139 s without).
goflags="-mod=readonly -gcflags=all=-dwarf=false"

complete() { [ -f "$dest/.complete" ]; }
used() { touch "$dest/.complete" 2>/dev/null || true; echo "$dest/bin"; exit 0; }
if complete; then used; fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if complete; then used; fi

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
# Under the lock no other build of this tool runs, so every .build-* directory is a killed build's.
for old in "$root"/v* "$root"/.build-*; do
  [ -d "$old" ] && [ "$old" != "$dest" ] || continue
  case $old in
  */.build-*) ;;
  *) [ -z "$(find "$old" -maxdepth 1 -name .complete -mtime -7)" ] || continue ;;
  esac
  echo "tools/build.sh: removing $old (unused for 7 days, or a killed build)" >&2
  rm -rf "$old"
done
echo "$dest/bin"
