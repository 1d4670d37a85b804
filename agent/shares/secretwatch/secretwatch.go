// Package secretwatch keeps a node's staged SMB volumes on their Secrets' current credentials: it finds the
// Secret each volume's credentials come from (its PersistentVolume's nodeStageSecretRef, read with the kubelet's
// credentials, which the node authorizer lets read the PVs and Secrets of the node's pods), watches each of those
// Secrets (a single-object watch, as the kubelet's own secret manager does) and hands every change to the Node
// service (node.Server.Rotate), which mounts the share anew with the new credentials and re-stages the volumes.
//
// The kubelet passes a stage's Secret content, never its name, so without this a rotated password reached only
// the volumes staged after it; with it, the pods started after the change get the new credentials on volumes
// already staged too, and a share healed after the change is mounted with them.
package secretwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"berth.dev/berth/agent/shares/node"
)

// Volumes are the Node service's staged volumes (node.Server).
type Volumes interface {
	SecretUses() ([]node.SecretUse, error)
	SetSecret(volumeID string, ref node.SecretRef) error
	Rotate(ctx context.Context, ref node.SecretRef, data map[string]string) ([]string, error)
}

// Config is a watch's setup.
type Config struct {
	// Client returns the client to read PVs and Secrets with (the kubelet's credentials), or an error while the
	// node has none yet (before its join): the watch waits for it.
	Client func() (kubernetes.Interface, error)
	// Driver is the CSI driver's name: a PV of another driver is never taken.
	Driver  string
	Volumes Volumes
	// Interval is how often the staged volumes are looked at again and each watched Secret handed over again
	// (a failed rotation is tried again; the same content is a no-op): default 30 s.
	Interval time.Duration
	Log      *slog.Logger
}

// Run watches until ctx ends.
func Run(ctx context.Context, cfg Config) {
	if cfg.Interval == 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	w := &watch{cfg: cfg, watches: map[node.SecretRef]context.CancelFunc{}, failed: map[string]string{}, noSecret: map[string]bool{}}
	defer w.stopAll()
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		w.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

type watch struct {
	cfg     Config
	client  kubernetes.Interface
	noCreds string // the last reason there was no client, logged once
	watches map[node.SecretRef]context.CancelFunc
	failed  map[string]string // volume ID → the last failure finding its Secret, logged once
	// noSecret are the volumes whose PV names no node-stage Secret.
	noSecret map[string]bool
}

// round finds the Secrets of the volumes that have none yet and watches exactly the Secrets in use.
func (w *watch) round(ctx context.Context) {
	uses, err := w.cfg.Volumes.SecretUses()
	if err != nil {
		w.cfg.Log.Warn("listing the staged volumes", "err", err)
		return
	}
	if len(uses) == 0 {
		w.sync(ctx, nil)
		return
	}
	if w.client == nil {
		c, err := w.cfg.Client()
		if err != nil {
			if err.Error() != w.noCreds {
				w.cfg.Log.Info("not watching the volumes' Secrets yet: no credentials for the control plane", "err", err)
				w.noCreds = err.Error()
			}
			return
		}
		w.client = c
	}
	want := map[node.SecretRef]bool{}
	for _, u := range uses {
		if u.Secret == nil && u.PV != "" && !w.noSecret[u.VolumeID] {
			ref, err := w.secretOf(ctx, u)
			if errors.Is(err, errNoSecret) {
				w.cfg.Log.Info("a volume's credentials are not from a Secret the node can watch", "volume", u.VolumeID, "pv", u.PV, "reason", err)
				w.noSecret[u.VolumeID] = true // its PV will not change: not asked again
				continue
			}
			if err != nil {
				if w.failed[u.VolumeID] != err.Error() {
					w.cfg.Log.Warn("finding a volume's Secret: a change of its credentials reaches only new stages", "volume", u.VolumeID, "pv", u.PV, "err", err)
					w.failed[u.VolumeID] = err.Error()
				}
				continue
			}
			delete(w.failed, u.VolumeID)
			if err := w.cfg.Volumes.SetSecret(u.VolumeID, *ref); err != nil {
				w.cfg.Log.Warn("recording a volume's Secret", "volume", u.VolumeID, "err", err)
				continue
			}
			u.Secret = ref
		}
		if u.Secret != nil {
			want[*u.Secret] = true
		}
	}
	w.sync(ctx, want)
}

// errNoSecret is a PV that names no node-stage Secret: nothing to watch, and nothing to ask again.
var errNoSecret = errors.New("its PersistentVolume names no nodeStageSecretRef")

// secretOf reads the volume's PV: its nodeStageSecretRef, once the PV is this driver's volume.
func (w *watch) secretOf(ctx context.Context, u node.SecretUse) (*node.SecretRef, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pv, err := w.client.CoreV1().PersistentVolumes().Get(ctx, u.PV, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("PersistentVolume %s: %w", u.PV, err)
	}
	c := pv.Spec.CSI
	if c == nil || c.Driver != w.cfg.Driver || c.VolumeHandle != u.VolumeID {
		return nil, fmt.Errorf("PersistentVolume %s is not volume %s of %s", u.PV, u.VolumeID, w.cfg.Driver)
	}
	if c.NodeStageSecretRef == nil {
		return nil, errNoSecret
	}
	return &node.SecretRef{Namespace: c.NodeStageSecretRef.Namespace, Name: c.NodeStageSecretRef.Name}, nil
}

// sync starts a watch of each wanted Secret not watched and stops those no longer wanted.
func (w *watch) sync(ctx context.Context, want map[node.SecretRef]bool) {
	for ref, stop := range w.watches {
		if !want[ref] {
			stop()
			delete(w.watches, ref)
			w.cfg.Log.Info("no longer watching a Secret: no staged volume uses it", "secret", ref.String())
		}
	}
	for _, ref := range slices.SortedFunc(maps.Keys(want), func(a, b node.SecretRef) int { return strings.Compare(a.String(), b.String()) }) {
		if _, ok := w.watches[ref]; ok {
			continue
		}
		wctx, stop := context.WithCancel(ctx)
		w.watches[ref] = stop
		go w.watchSecret(wctx, ref)
		w.cfg.Log.Info("watching a Secret of staged volumes", "secret", ref.String())
	}
}

func (w *watch) stopAll() {
	for _, stop := range w.watches {
		stop()
	}
}

// watchSecret hands the Secret's content to Rotate at first sight, at every change and every Interval (an
// informer on that one object: list and watch by metadata.name, which the node authorizer allows a node for a
// Secret its pods' volumes name).
func (w *watch) watchSecret(ctx context.Context, ref node.SecretRef) {
	f := informers.NewSharedInformerFactoryWithOptions(w.client, w.cfg.Interval, informers.WithNamespace(ref.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ref.Name).String()
		}))
	inf := f.Core().V1().Secrets().Informer()
	hand := func(obj any) {
		sec, ok := obj.(*corev1.Secret)
		if !ok || sec.Namespace != ref.Namespace || sec.Name != ref.Name {
			return
		}
		data := make(map[string]string, len(sec.Data))
		for k, v := range sec.Data {
			data[k] = string(v)
		}
		restaged, err := w.cfg.Volumes.Rotate(ctx, ref, data)
		if err != nil {
			w.cfg.Log.Warn("taking a changed Secret: tried again in a while", "secret", ref.String(), "err", err)
		}
		if len(restaged) > 0 {
			w.cfg.Log.Info("volumes re-staged with a changed Secret", "secret", ref.String(), "volumes", restaged)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    hand,
		UpdateFunc: func(_, obj any) { hand(obj) },
	}); err != nil {
		w.cfg.Log.Warn("watching a Secret", "secret", ref.String(), "err", err)
		return
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
}

// KubeletClient returns a Config.Client that builds a client from the kubelet's kubeconfig once it exists.
func KubeletClient(kubeconfig string, build func(path string) (kubernetes.Interface, error)) func() (kubernetes.Interface, error) {
	return func() (kubernetes.Interface, error) {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, fmt.Errorf("the kubelet's kubeconfig: %w", err)
		}
		return build(kubeconfig)
	}
}
