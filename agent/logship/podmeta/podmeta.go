// Package podmeta knows the pods of this node (an informer scoped to spec.nodeName, so the shipper never lists the
// cluster's pods, let alone once per line) and gives the fields a pod's log records carry beyond what the log
// path says: its labels, as kubernetes.labels.<key>. It watches the pods' metadata only (client-go's metadata
// client: what the labels need crosses the wire and stays in memory, and no typed clientset is linked in).
package podmeta

import (
	"context"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"berth.dev/berth/agent/logship/sink"
)

const byUID = "uid"

var podsResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// Pods is this node's pods, kept up to date.
type Pods struct {
	index  cache.Indexer
	synced cache.InformerSynced
}

// Start watches the pods on node until ctx ends. It does not wait for the API: until the first list is in (or
// while the API is away) pods are simply not known, and their records go without labels rather than not at all.
func Start(ctx context.Context, mc metadata.Interface, node string) *Pods {
	onNode := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
	}
	pods := mc.Resource(podsResource)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			onNode(&o)
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			onNode(&o)
			return pods.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &metav1.PartialObjectMetadata{}, 0, cache.Indexers{byUID: func(obj any) ([]string, error) {
		if p, ok := obj.(*metav1.PartialObjectMetadata); ok {
			return []string{string(p.UID)}, nil
		}
		return nil, nil
	}})
	go inf.RunWithContext(ctx)
	return &Pods{index: inf.GetIndexer(), synced: inf.HasSynced}
}

// WaitSynced waits until the first list is in (false if ctx ends first).
func (p *Pods) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), p.synced)
}

// Attrs are the fields of the pod with uid (none if this node has no such pod: it may be gone, its logs not yet).
func (p *Pods) Attrs(uid types.UID) []sink.Attr {
	objs, err := p.index.ByIndex(byUID, string(uid))
	if err != nil || len(objs) == 0 {
		return nil
	}
	pod := objs[0].(*metav1.PartialObjectMetadata)
	keys := make([]string, 0, len(pod.Labels))
	for k := range pod.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]sink.Attr, 0, len(keys))
	for _, k := range keys {
		out = append(out, sink.Attr{Key: "kubernetes.labels." + k, Value: pod.Labels[k]})
	}
	return out
}
