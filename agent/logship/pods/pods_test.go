package pods

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiscover(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{
		"kube-system_coredns-7d9c8c5d4f-abcde_1b2c3d4e-0000-1111-2222-333344445555/coredns/0.log",
		"demo_hello-0_aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/web/0.log",
		"demo_hello-0_aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/web/1.log",
		"demo_hello-0_aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/web/0.log.20261203-120000", // rotated: the follower's
		"not-a-pod-dir/web/0.log",
		"demo_hello-1_ffff/web/current.log",
	} {
		path := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cs, errs := Discover(root)
	var got []string
	for _, c := range cs {
		got = append(got, fmt.Sprintf("%s/%s/%s/%s/%d", c.Namespace, c.Pod, c.UID, c.Name, c.Restart))
	}
	want := "demo/hello-0/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/web/0 demo/hello-0/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/web/1 kube-system/coredns-7d9c8c5d4f-abcde/1b2c3d4e-0000-1111-2222-333344445555/coredns/0"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	if len(errs) != 2 || !strings.Contains(fmt.Sprint(errs), `"not-a-pod-dir" is not <namespace>_<pod>_<uid>`) || !strings.Contains(fmt.Sprint(errs), `"current.log" is not <restart count>.log`) {
		t.Errorf("errors %v", errs)
	}
}
