package secretwatch

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"berth.dev/berth/agent/shares/node"
	"berth.dev/berth/test/wait"
)

const driver = "smb.shares.berth.dev"

// fakeVolumes stands in for the Node service (the logic of the watch; the Node service's Rotate has its own tests
// and the whole on a real control plane is TestWatchesAsTheNode).
type fakeVolumes struct {
	mu      sync.Mutex
	uses    []node.SecretUse
	rotated []string // "<ref> <password>"
}

func (f *fakeVolumes) SecretUses() ([]node.SecretUse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.uses), nil
}

func (f *fakeVolumes) SetSecret(id string, ref node.SecretRef) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.uses {
		if f.uses[i].VolumeID == id {
			f.uses[i].Secret = &ref
		}
	}
	return nil
}

func (f *fakeVolumes) Rotate(_ context.Context, ref node.SecretRef, data map[string]string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rotated = append(f.rotated, ref.String()+" "+data["password"])
	return nil, nil
}

func (f *fakeVolumes) saw(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.rotated, s)
}

func (f *fakeVolumes) secretOf(id string) *node.SecretRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range f.uses {
		if u.VolumeID == id {
			return u.Secret
		}
	}
	return nil
}

func pv(name, handle, driverName string, secret *corev1.SecretReference) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PersistentVolumeSpec{
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driverName, VolumeHandle: handle, NodeStageSecretRef: secret}}}}
}

func secret(ns, name, password string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data: map[string][]byte{"username": []byte("alice"), "password": []byte(password)}}
}

// The watch finds a published volume's Secret in its PV (only a PV of this driver and this volume), hands the
// Secret's content over at once and at each change, not the content of another Secret of the same namespace, and
// waits for a client while the node has none.
func TestFindsAndWatches(t *testing.T) {
	ref := &corev1.SecretReference{Namespace: "shares", Name: "files"}
	cs := fake.NewClientset(
		pv("pv-a", "vol-a", driver, ref),
		pv("pv-b", "vol-b", "nfs.shares.berth.dev", ref), // another driver's PV of that name: never taken
		pv("pv-c", "vol-c", driver, nil),                 // credentials from no Secret: nothing to watch
		secret("shares", "files", "one"), secret("shares", "other", "x"))
	vols := &fakeVolumes{uses: []node.SecretUse{{VolumeID: "vol-a", PV: "pv-a"}, {VolumeID: "vol-b", PV: "pv-b"}, {VolumeID: "vol-c", PV: "pv-c"}, {VolumeID: "vol-d"}}}
	var mu sync.Mutex
	joined := false
	client := func() (kubernetes.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		if !joined {
			return nil, errors.New("the kubelet's kubeconfig: no such file")
		}
		return cs, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		Run(ctx, Config{Client: client, Driver: driver, Volumes: vols, Interval: 100 * time.Millisecond})
		close(done)
	}()
	mu.Lock()
	joined = true
	mu.Unlock()
	wait.For(t, 10*time.Second, "the first content of shares/files handed over", func() bool { return vols.saw("shares/files one") })
	if got := vols.secretOf("vol-a"); got == nil || *got != (node.SecretRef{Namespace: "shares", Name: "files"}) {
		t.Errorf("vol-a's Secret recorded as %v", got)
	}
	for _, id := range []string{"vol-b", "vol-c", "vol-d"} {
		if got := vols.secretOf(id); got != nil {
			t.Errorf("%s's Secret recorded as %v, want none", id, got)
		}
	}
	if _, err := cs.CoreV1().Secrets("shares").Update(ctx, secret("shares", "files", "two"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the changed content of shares/files handed over", func() bool { return vols.saw("shares/files two") })
	cancel()
	<-done
	vols.mu.Lock()
	defer vols.mu.Unlock()
	for _, r := range vols.rotated {
		if r != "shares/files one" && r != "shares/files two" {
			t.Errorf("handed over %q: not the watched Secret's", r)
		}
	}
}

// A Secret no staged volume names any more is no longer watched.
func TestStopsWatching(t *testing.T) {
	cs := fake.NewClientset(pv("pv-a", "vol-a", driver, &corev1.SecretReference{Namespace: "shares", Name: "files"}), secret("shares", "files", "one"))
	vols := &fakeVolumes{uses: []node.SecretUse{{VolumeID: "vol-a", PV: "pv-a"}}}
	w := &watch{cfg: Config{Client: func() (kubernetes.Interface, error) { return cs, nil }, Driver: driver, Volumes: vols, Interval: time.Hour,
		Log: slog.New(slog.DiscardHandler)}, watches: map[node.SecretRef]context.CancelFunc{}, failed: map[string]string{}, noSecret: map[string]bool{}}
	ctx := context.Background()
	w.round(ctx)
	if got := slices.Collect(maps.Keys(w.watches)); len(got) != 1 || got[0].String() != "shares/files" {
		t.Fatalf("watches %v, want shares/files", got)
	}
	vols.mu.Lock()
	vols.uses = nil // unstaged
	vols.mu.Unlock()
	w.round(ctx)
	if len(w.watches) != 0 {
		t.Errorf("watches %v after the last volume went", w.watches)
	}
}
