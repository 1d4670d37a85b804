#!/usr/bin/env bash
# Regenerates everything packer-sdc generates for the plugin: config.hcl2spec.go (mapstructure-to-hcl2), the
# field docs (struct-markdown → docs-partials/) and the rendered docs (renderdocs → .docs/). Run from anywhere;
# `make generate` runs it and `make lint` fails when its output differs from what is committed.
#
# packer-sdc struct-markdown finds the project root by walking up to a directory named packer-plugin-*, and loops
# forever at / when there is none; the plugin is reached through such a symlink.
#
#   generate.sh          regenerate
#   generate.sh --check  regenerate and fail if that changed anything (the generated files were stale)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
generated() { (cd "$here" && find builder provisioner -name config.hcl2spec.go; find docs-partials .docs -type f 2>/dev/null) | sort; }
sums() { (cd "$here" && generated | xargs -r sha256sum); }
before=$(sums)
sdc=${PACKER_SDC:-$("$here/../tools/build.sh" packer-sdc)/packer-sdc}
link=$(mktemp -d)/packer-plugin-berth
trap 'rm -rf "$(dirname "$link")"' EXIT
ln -s "$here" "$link"
for c in builder/disk provisioner/node; do
	# mapstructure-to-hcl2 loads the Go package, so it runs in the real tree (the link is outside the module).
	(cd "$here/$c" && GOFILE=config.go GOPACKAGE=$(basename "$c") "$sdc" mapstructure-to-hcl2 -type Config)
	(cd "$link/$c" && "$sdc" struct-markdown config.go)
done
# renderdocs does not truncate files it rewrites: start from an empty .docs.
rm -rf "$here/.docs"
(cd "$link" && "$sdc" renderdocs -src docs -partials docs-partials -dst .docs 2>/dev/null)
gofmt -w "$here"/builder/*/config.hcl2spec.go "$here"/provisioner/*/config.hcl2spec.go
if [ "${1:-}" = --check ] && [ "$before" != "$(sums)" ]; then
	echo "generate.sh: generated plugin files were stale; they are regenerated now, commit them:" >&2
	diff <(echo "$before") <(sums) >&2 || true
	exit 1
fi
