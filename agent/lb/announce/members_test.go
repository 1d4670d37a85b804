package announce

import (
	"slices"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// Liveness is measured on the observer's clock: a host is live while its renewTime keeps changing, whatever the
// time it says (here an hour in the past, as on a host with a wrong clock), and leaves the live set one lease
// duration after the last change this host saw; a deleted Lease leaves at once; this host is always live.
func TestLivenessOnTheObserversClock(t *testing.T) {
	changes := 0
	m, err := NewMembers(MembersConfig{Client: fake.NewClientset(), Identity: "lb-1", Changed: func() { changes++ }})
	if err != nil {
		t.Fatal(err)
	}
	lease := func(id string, renew time.Time) *coordinationv1.Lease {
		secs := int32(3)
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeasePrefix + id}}
		rt := metav1.NewMicroTime(renew)
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &id, &secs, &rt
		return l
	}
	skewed := time.Now().Add(-time.Hour)
	t0 := time.Now()
	m.observe([]*coordinationv1.Lease{lease("lb-2", skewed)}, t0)
	if got := m.Live(); !slices.Equal(got, []string{"lb-1", "lb-2"}) {
		t.Errorf("live %v, want lb-1 and lb-2", got)
	}
	m.observe([]*coordinationv1.Lease{lease("lb-2", skewed.Add(time.Second))}, t0.Add(2*time.Second)) // renewed
	m.observe([]*coordinationv1.Lease{lease("lb-2", skewed.Add(time.Second))}, t0.Add(4*time.Second)) // 2 s since
	if got := m.Live(); !slices.Equal(got, []string{"lb-1", "lb-2"}) {
		t.Errorf("live %v 2 s after a renewal, want lb-1 and lb-2", got)
	}
	m.observe([]*coordinationv1.Lease{lease("lb-2", skewed.Add(time.Second))}, t0.Add(5*time.Second+time.Millisecond))
	if got := m.Live(); !slices.Equal(got, []string{"lb-1"}) {
		t.Errorf("live %v 3 s after the last renewal, want lb-1 only", got)
	}
	m.observe([]*coordinationv1.Lease{lease("lb-2", skewed.Add(2*time.Second))}, t0.Add(6*time.Second))
	m.observe(nil, t0.Add(6*time.Second+time.Millisecond))
	if got := m.Live(); !slices.Equal(got, []string{"lb-1"}) || changes != 4 {
		t.Errorf("after the Lease was deleted: live %v, %d changes; want lb-1 only, 4 changes", got, changes)
	}
	if _, err := NewMembers(MembersConfig{Client: fake.NewClientset(), Identity: "LB_1"}); err == nil {
		t.Error("an identity that is not a DNS label was accepted")
	}
}
