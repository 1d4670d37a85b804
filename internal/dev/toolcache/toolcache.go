// Package toolcache finds the pinned tools that tools/build.sh built on this machine, so that berth-dev needs no
// source checkout at run time: `make tools` (or `make demo`) builds them once into the cache, and berth-dev, from
// whatever directory it was copied to, picks the newest complete build of the pinned version.
package toolcache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"berth.dev/berth/imagebuilder/bake"
)

// KubernetesVersion is the Kubernetes release berth pins (tools/k8s/go.mod); its build is the tool "k8s".
const KubernetesVersion = "1.37.2"

// CoreDNSVersion is the CoreDNS release of the local cloud's cluster DNS (tools/coredns/go.mod); its build is the
// tool "coredns".
const CoreDNSVersion = "1.13.1"

// VictoriaLogsVersion is the VictoriaLogs release of the local cloud's log backend (tools/victorialogs/go.mod); its
// build is the tool "victorialogs".
const VictoriaLogsVersion = "1.52.2"

// Dir returns the cache directory: $BERTH_CACHE, else ~/.cache/berth (as tools/build.sh, the Makefile and the
// bake's rootfs cache have it).
func Dir() string { return bake.DefaultCacheDir() }

// Find returns the bin directory of the most recently used complete build of tool at version under cache
// (<cache>/<tool>/v<version>-<key>/bin, complete when .complete exists). Builds of other versions are ignored.
func Find(cache, tool, version string) (string, error) {
	root := filepath.Join(cache, tool)
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("tool cache %s: %w", root, err)
	}
	var best string
	var bestTime time.Time
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "v"+version+"-") {
			continue
		}
		st, err := os.Stat(filepath.Join(root, e.Name(), ".complete"))
		if err != nil {
			continue
		}
		if best == "" || st.ModTime().After(bestTime) {
			best, bestTime = filepath.Join(root, e.Name(), "bin"), st.ModTime()
		}
	}
	if best == "" {
		return "", fmt.Errorf("no complete build of %s v%s in %s: run `make tools` in a berth checkout (or point the flag at the binaries)", tool, version, root)
	}
	return best, nil
}
