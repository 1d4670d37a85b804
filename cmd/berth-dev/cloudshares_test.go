package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/test/podwait"
)

// readmeVolume: the README's "Try a volume" as a user follows it, with the printed kubeconfig and a plain
// kubectl, once with each of the cloud's StorageClasses: the claim is provisioned as a directory of its own on the
// cloud's server, the writer on node-1 writes to it, the reader on node-2 reads the line back; deleting the
// manifest deletes the volume and its directory on the server.
func readmeVolume(t *testing.T, dir, kubectlBin string) {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section, ok := strings.CutPrefix(string(readme)[strings.Index(string(readme), "### Try a volume"):], "### Try a volume")
	if !ok {
		t.Fatal(`README.md has no "### Try a volume" section`)
	}
	_, rest, _ := strings.Cut(section, "```yaml\n")
	manifest, _, ok := strings.Cut(rest, "```")
	if !ok || !strings.Contains(manifest, "storageClassName: "+cloud.SMBClass) {
		t.Fatalf("README.md's Try a volume has no yaml block of a %s claim", cloud.SMBClass)
	}
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectlBin, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(dir, "kubeconfig"))
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	st, cs := adminOf(t, dir)
	ctx := context.Background()
	for _, c := range []struct{ class, served string }{
		{cloud.SMBClass, filepath.Join(st.Shares.Dir, "smb", "data", "volumes")},
		{cloud.NFSClass, filepath.Join(st.Shares.Dir, "nfs", "export", "volumes")},
	} {
		m := strings.ReplaceAll(manifest, "storageClassName: "+cloud.SMBClass, "storageClassName: "+c.class)
		kubectl(m, "apply", "-f", "-")
		wctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
		_, err := podwait.Phase(wctx, cs.CoreV1().Pods("default"), "reader", corev1.PodSucceeded, 2*time.Second)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c.class, err, sharesDiagnostics(dir, st, cs))
		}
		logs, err := cs.CoreV1().Pods("default").GetLogs("reader", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil || !strings.HasPrefix(string(logs), "written on node-1 at ") {
			t.Errorf("%s: the reader on node-2 read %q (%v), want the writer's line", c.class, logs, err)
		}
		pvc, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, "files", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pv := pvc.Spec.VolumeName
		onServer := filepath.Join(c.served, pv, "hello")
		if data, err := os.ReadFile(onServer); err != nil || string(data) != string(logs) {
			t.Errorf("%s: the line on the server (%s): %q %v", c.class, onServer, data, err)
		}
		t.Logf("%s: claim files bound to %s, a directory on the server; node-2 read %q", c.class, pv, strings.TrimSpace(string(logs)))
		kubectl(m, "delete", "-f", "-", "--wait=true", "--timeout=3m")
		gone := func() bool {
			_, err := cs.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{})
			_, serr := os.Stat(filepath.Dir(onServer))
			return apierrors.IsNotFound(err) && os.IsNotExist(serr)
		}
		for deadline := time.Now().Add(3 * time.Minute); !gone(); time.Sleep(time.Second) {
			if time.Now().After(deadline) {
				t.Errorf("%s: volume %s or its directory is left 3 minutes after the claim was deleted\n%s", c.class, pv, sharesDiagnostics(dir, st, cs))
				break
			}
		}
	}
}

// sharesDiagnostics are what says why a volume did not come: the cluster's latest Events, the provisioner's log
// and each node's share drivers' journal.
func sharesDiagnostics(dir string, st cloud.State, cs kubernetes.Interface) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b strings.Builder
	if evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{}); err == nil {
		items := evs.Items
		fmt.Fprintf(&b, "events (the latest %d of %d):\n", min(25, len(items)), len(items))
		for _, e := range items[max(0, len(items)-25):] {
			fmt.Fprintf(&b, "  %s %s/%s %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	if pods, err := cs.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=berth-shares-provisioner"}); err == nil {
		for _, p := range pods.Items {
			logs, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: ptrTo(int64(15))}).DoRaw(ctx)
			fmt.Fprintf(&b, "provisioner %s on %s (%s): %v\n%s", p.Name, p.Spec.NodeName, p.Status.Phase, err, logs)
		}
	}
	for _, n := range st.Nodes {
		out, err := st.SSH(n).Run(ctx, "journalctl -u berth-csi --no-pager -o cat -n 15", nil)
		fmt.Fprintf(&b, "%s berth-csi: %v\n%s", n.Name, err, out)
	}
	return b.String()
}

func ptrTo[T any](v T) *T { return &v }
