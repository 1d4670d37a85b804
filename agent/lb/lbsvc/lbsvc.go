// Package lbsvc is what the load balancer's controller and data plane agree on about a Service: whether berth
// serves it.
package lbsvc

import corev1 "k8s.io/api/core/v1"

// Class is the load-balancer class berth serves and whether it also serves Services without a class.
type Class struct {
	Name    string
	Default bool
}

// Serves reports whether svc is a LoadBalancer Service of this class.
func (c Class) Serves(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return c.Default
	}
	return *svc.Spec.LoadBalancerClass == c.Name
}

// Key is the Service's namespace/name.
func Key(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }
