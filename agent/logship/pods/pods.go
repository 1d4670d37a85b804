// Package pods finds the container logs the kubelet writes under /var/log/pods and what their paths say:
// <root>/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log (rotated files beside it carry a suffix and are
// the follower's business).
package pods

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"berth.dev/berth/agent/logship/sink"
)

// Container is one container log file and the pod it belongs to.
type Container struct {
	Namespace, Pod, UID, Name string
	Restart                   int
	// Path is the file the runtime writes.
	Path string
}

// Attrs are the container's fields on each of its records.
func (c Container) Attrs() []sink.Attr {
	return []sink.Attr{{Key: "kubernetes.namespace", Value: c.Namespace}, {Key: "kubernetes.pod", Value: c.Pod},
		{Key: "kubernetes.pod_uid", Value: c.UID}, {Key: "kubernetes.container", Value: c.Name}}
}

// A namespace and a pod name are DNS labels and subdomains: no "_"; the UID is the last field.
var podDir = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)_([a-z0-9]([-.a-z0-9]*[a-z0-9])?)_([0-9a-fA-F-]+)$`)

// Parse reads what path, under root, says.
func Parse(root, path string) (Container, error) {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return Container{}, fmt.Errorf("%s: %w", path, err)
	}
	parts := strings.Split(rel, string(filepath.Separator))
	if len(parts) != 3 {
		return Container{}, fmt.Errorf("%s: not <namespace>_<pod>_<uid>/<container>/<n>.log under %s", path, root)
	}
	m := podDir.FindStringSubmatch(parts[0])
	if m == nil {
		return Container{}, fmt.Errorf("%s: the directory %q is not <namespace>_<pod>_<uid>", path, parts[0])
	}
	n, ok := strings.CutSuffix(parts[2], ".log")
	restart, err := strconv.Atoi(n)
	if !ok || err != nil || restart < 0 {
		return Container{}, fmt.Errorf("%s: the file %q is not <restart count>.log", path, parts[2])
	}
	return Container{Namespace: m[1], Pod: m[3], UID: m[5], Name: parts[1], Restart: restart, Path: path}, nil
}

// Discover lists the container log files under root, sorted by path, and the paths it could not read.
func Discover(root string) ([]Container, []error) {
	paths, err := filepath.Glob(filepath.Join(root, "*", "*", "*.log"))
	if err != nil {
		return nil, []error{err}
	}
	sort.Strings(paths)
	var out []Container
	var errs []error
	for _, p := range paths {
		c, err := Parse(root, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, c)
	}
	return out, errs
}
