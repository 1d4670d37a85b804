package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/images"
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

// smbRotation: while a pod on node-1 writes a line a second to an SMB volume, the server restarts, and the pod's
// mount is usable again within 15 s of its return, the pod not restarted. Then the SMB user's password is rotated,
// on the server and in its Secret. The pod keeps writing (its mount's session carries on); node-1's driver
// re-stages the volume with the new password, from its watch of the Secret; a new pod on node-2 mounts the volume,
// which only the new password can do now, and reads the old pod's lines.
func smbRotation(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	st, cs := adminOf(t, dir)
	pods := cs.CoreV1().Pods("default")
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "rotate"}, Spec: corev1.PersistentVolumeClaimSpec{
		StorageClassName: ptrTo(cloud.SMBClass), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if _, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(name, node, script string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: name, Image: images.Busybox, ImagePullPolicy: corev1.PullNever, Command: []string{"sh", "-c", script},
				VolumeMounts: []corev1.VolumeMount{{Name: "files", MountPath: "/files"}}}},
			Volumes: []corev1.Volume{{Name: "files", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "rotate"}}}}}}
	}
	t.Cleanup(func() {
		for _, name := range []string{"old", "new"} {
			pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(0))})
		}
		cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "rotate", metav1.DeleteOptions{})
	})
	if _, err := pods.Create(ctx, pod("old", "node-1", "while true; do date >> /files/old.log; sleep 1; done"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	_, err := podwait.Phase(wctx, pods, "old", corev1.PodRunning, 2*time.Second)
	cancel()
	if err != nil {
		t.Fatalf("%v\n%s", err, sharesDiagnostics(dir, st, cs))
	}
	pvc, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, "rotate", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	written := filepath.Join(st.Shares.Dir, "smb", "data", "volumes", pvc.Spec.VolumeName, "old.log")
	lines := func() int {
		data, _ := os.ReadFile(written)
		return strings.Count(string(data), "\n")
	}
	grows := func(from int, what string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); lines() < from+3; time.Sleep(time.Second) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the pod on node-1 wrote %d lines in a minute to %s, want 3\n%s", what, lines()-from, written, sharesDiagnostics(dir, st, cs))
			}
		}
	}
	grows(0, "before the restart")
	// The server restarts under the writing pod: its mount is usable again within 15 s of the server's return.
	if err := cloud.RestartSMB(ctx, st, proc.DefaultRegistry(nil)); err != nil {
		t.Fatal(err)
	}
	back, from := time.Now(), lines()
	for lines() <= from {
		if time.Since(back) > 15*time.Second {
			t.Fatalf("the pod on node-1 wrote nothing to its SMB volume in the 15 s after the server came back\n%s", sharesDiagnostics(dir, st, cs))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("the pod on node-1 wrote to its SMB volume again %v after the server came back", time.Since(back).Round(100*time.Millisecond))
	restaged := func() int {
		out, err := st.SSH(st.Nodes[0]).Run(ctx, "journalctl -u berth-csi --no-pager -o cat | grep -c 're-staged with a changed Secret' || true", nil)
		if err != nil {
			t.Fatalf("node-1's journal: %v", err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	before := restaged()
	if err := cloud.RotateSMBPassword(ctx, dir, st, cs); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	for deadline := time.Now().Add(2 * time.Minute); restaged() == before; time.Sleep(2 * time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("node-1 did not re-stage the volume in 2 minutes after its Secret changed\n%s", sharesDiagnostics(dir, st, cs))
		}
	}
	t.Logf("node-1 re-staged the volume with the new password %v after the rotation", time.Since(rotated).Round(time.Second))
	if _, err := pods.Create(ctx, pod("new", "node-2", "tail -n 1 /files/old.log"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, 6*time.Minute)
	_, err = podwait.Phase(wctx, pods, "new", corev1.PodSucceeded, 2*time.Second)
	cancel()
	if err != nil {
		t.Fatalf("a new pod on node-2 after the rotation: %v\n%s", err, sharesDiagnostics(dir, st, cs))
	}
	if logs, err := pods.GetLogs("new", &corev1.PodLogOptions{}).DoRaw(ctx); err != nil || len(strings.TrimSpace(string(logs))) == 0 {
		t.Errorf("the new pod on node-2 read %q (%v), want the old pod's last line", logs, err)
	}
	grows(lines(), "after the rotation")
}

// sharesFailures: claims that cannot work, each with a pod on node-1 that uses it: a server name that does not
// resolve, a class whose Secret does not exist, a Secret with a misspelt key, conflicting mount options and a
// server that does not answer. Each gets an Event, on the claim or on the pod, that names the problem (the
// unreachable server's within its mount timeout, with no mount helper left); no pod starts, and both nodes stay
// Ready.
func sharesFailures(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	st, cs := adminOf(t, dir)
	secretParams := func(namespace, name string) map[string]string {
		return map[string]string{
			"csi.storage.k8s.io/provisioner-secret-name": name, "csi.storage.k8s.io/provisioner-secret-namespace": namespace,
			"csi.storage.k8s.io/node-stage-secret-name": name, "csi.storage.k8s.io/node-stage-secret-namespace": namespace}
	}
	misspelt := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "misspelt"}, StringData: map[string]string{"user": "root", "password": "x"}}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, misspelt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Secrets("default").Delete(ctx, "misspelt", metav1.DeleteOptions{}) })
	// claimAndPod makes claim name of class (or bound to volume) and a pod on node-1 that uses it.
	claimAndPod := func(name string, class *string, volume string) {
		t.Helper()
		claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: class, VolumeName: volume, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		if _, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: "node-1", RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: images.Busybox, ImagePullPolicy: corev1.PullNever, Command: []string{"true"},
				VolumeMounts: []corev1.VolumeMount{{Name: "files", MountPath: "/files"}}}},
			Volumes: []corev1.Volume{{Name: "files", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}}}}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(0))})
			cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, name, metav1.DeleteOptions{})
		})
	}
	type failure struct {
		name, provisioner, source string
		params                    map[string]string
		options                   []string
		want                      []string // in one Event's message
	}
	cases := []failure{
		{"bad-server", "smb.shares.berth.dev", "//no-such-server.invalid/data", secretParams(metav1.NamespaceSystem, cloud.SMBSecret), nil, []string{"no-such-server.invalid"}},
		{"no-secret", "smb.shares.berth.dev", st.Shares.SMB, secretParams("default", "absent"), nil, []string{"absent", "not found"}},
		{"misspelt-key", "smb.shares.berth.dev", st.Shares.SMB, secretParams("default", "misspelt"), nil, []string{`"user"`, `"username"`}},
		{"conflicting", "nfs.shares.berth.dev", st.Shares.NFS, nil, []string{"hard", "soft"}, []string{"hard", "soft"}},
	}
	for _, c := range cases {
		params := map[string]string{"source": c.source, "subDir": "volumes"}
		maps.Copy(params, c.params)
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "fail-" + c.name}, Provisioner: c.provisioner, Parameters: params, MountOptions: c.options}
		if _, err := cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.StorageV1().StorageClasses().Delete(ctx, sc.Name, metav1.DeleteOptions{}) })
		claimAndPod(sc.Name, ptrTo(sc.Name), "")
	}
	// A volume on a server that does not answer (an address of the cloud's subnet that nobody has): a static one,
	// since the provisioner could not make its directory; the node's mount gives up at its timeout (60 s).
	unreachable := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "fail-unreachable"}, Spec: corev1.PersistentVolumeSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
		PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain, StorageClassName: "",
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "nfs.shares.berth.dev", VolumeHandle: "fail-unreachable",
			VolumeAttributes: map[string]string{"source": unreachableServer + ":/export"}}}}}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, unreachable, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().PersistentVolumes().Delete(ctx, unreachable.Name, metav1.DeleteOptions{}) })
	claimAndPod("fail-unreachable", ptrTo(""), unreachable.Name)
	cases = append(cases, failure{name: "unreachable", want: []string{unreachableServer, "timeout"}})
	for _, c := range cases {
		name := "fail-" + c.name
		var found string
		start := time.Now()
		for deadline := time.Now().Add(4 * time.Minute); found == "" && time.Now().Before(deadline); time.Sleep(2 * time.Second) {
			evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
			if err != nil {
				continue
			}
			for _, e := range evs.Items {
				if e.InvolvedObject.Name != name || e.Type != corev1.EventTypeWarning {
					continue
				}
				if !slices.ContainsFunc(c.want, func(w string) bool { return !strings.Contains(e.Message, w) }) {
					found = e.InvolvedObject.Kind + " " + e.Reason + ": " + e.Message
				}
			}
		}
		if found == "" {
			t.Errorf("%s: no Warning Event on its claim or pod naming %q in 4 minutes\n%s", c.name, c.want, sharesDiagnostics(dir, st, cs))
			continue
		}
		t.Logf("%s: after %v: %s", c.name, time.Since(start).Round(time.Second), found)
		if p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err != nil || p.Status.Phase != corev1.PodPending {
			t.Errorf("%s: the pod is %v (%v), want Pending", c.name, p.Status.Phase, err)
		}
	}
	// The unreachable server's mount helpers are stopped at their timeout (60 s; systemd then signals them, and
	// kills them 90 s later at the latest), not left behind: the kubelet tries again and again, so one may be
	// running, but none older than that.
	if out, err := st.SSH(st.Nodes[0]).Run(ctx, "ps -C mount.nfs -o etimes= | awk '$1 > 150' | wc -l", nil); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("node-1: mount helpers older than their 60 s timeout and systemd's 90 s to kill them: %q (%v)\n%s", out, err, sharesDiagnostics(dir, st, cs))
	}
	for _, n := range []string{"node-1", "node-2"} {
		node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil || !slices.ContainsFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool {
			return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
		}) {
			t.Errorf("%s is not Ready after the failed claims (%v)", n, err)
		}
	}
}

// unreachableServer is an address of the cloud's node subnet that nobody has: what a server that is down looks like.
const unreachableServer = "10.88.0.9"
