// Package clusterdns is the local cloud's cluster DNS, as kubeadm's CoreDNS add-on has it: CoreDNS (tools/coredns,
// built from the module proxy) in a Deployment in kube-system, behind the Service kube-dns at the address the
// kubelets name as clusterDNS, with the RBAC it needs to watch Services and EndpointSlices. No registry is reachable
// here, so its image is written locally (WriteImage) and pre-cached in the node image like the pause image.
package clusterdns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/internal/ociimage"
)

const (
	// Image is CoreDNS' image reference; the node image carries it, and pods never pull it.
	Image = "berth.dev/coredns:1.13.1"
	// Name is the Deployment's, ServiceAccount's and ConfigMap's name; the Service is kube-dns, as in kubeadm.
	Name = "coredns"
	// Service is the name pods and tools look for.
	Service = "kube-dns"
	// Domain is the cluster domain the kubelets are configured with.
	Domain = "cluster.local"

	fieldManager = "berth-dev"
)

// WriteImage writes CoreDNS' image, from the binary at corednsBin, to path as an OCI layout tarball.
func WriteImage(corednsBin, path string) error {
	bin, err := ociimage.FromHostFile(corednsBin, "/coredns")
	if err != nil {
		return fmt.Errorf("coredns image: %w", err)
	}
	_, err = ociimage.WriteFile(path, ociimage.Image{Name: Image, Entrypoint: []string{"/coredns"}, Files: []ociimage.File{bin}})
	return err
}

// ServiceIP is the cluster DNS address for a service range: its tenth address, kubeadm's choice (10.96.0.10 for
// 10.96.0.0/12), which the agent renders into the kubelet's clusterDNS.
func ServiceIP(serviceCIDR netip.Prefix) netip.Addr {
	a := serviceCIDR.Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	return a
}

// Corefile serves the cluster domain from the API, as kubeadm's default does. There is no upstream in the local
// cloud (its network has no route out), so names outside the cluster domain get no answer, and forward and loop
// are left out.
const Corefile = `.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes ` + Domain + ` in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    cache 30
    reload
    loadbalance
}
`

// Apply creates or updates every object of the add-on (server-side apply, so a second run converges).
func Apply(ctx context.Context, cs kubernetes.Interface, serviceIP netip.Addr, replicas int32) error {
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	ns := metav1.NamespaceSystem
	labels := map[string]string{"k8s-app": Service}
	role := rbacv1ac.ClusterRole("system:"+Name).WithRules(
		rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("endpoints", "services", "pods", "namespaces").WithVerbs("list", "watch"),
		rbacv1ac.PolicyRule().WithAPIGroups("discovery.k8s.io").WithResources("endpointslices").WithVerbs("list", "watch"))
	binding := rbacv1ac.ClusterRoleBinding("system:" + Name).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName("system:" + Name)).
		WithSubjects(rbacv1ac.Subject().WithKind("ServiceAccount").WithName(Name).WithNamespace(ns))
	sa := corev1ac.ServiceAccount(Name, ns)
	cm := corev1ac.ConfigMap(Name, ns).WithData(map[string]string{"Corefile": Corefile})
	svc := corev1ac.Service(Service, ns).WithLabels(labels).WithSpec(corev1ac.ServiceSpec().
		WithSelector(labels).WithClusterIP(serviceIP.String()).WithPorts(
		corev1ac.ServicePort().WithName("dns").WithPort(53).WithProtocol(corev1.ProtocolUDP).WithTargetPort(intstr.FromInt32(53)),
		corev1ac.ServicePort().WithName("dns-tcp").WithPort(53).WithProtocol(corev1.ProtocolTCP).WithTargetPort(intstr.FromInt32(53)),
		corev1ac.ServicePort().WithName("metrics").WithPort(9153).WithProtocol(corev1.ProtocolTCP).WithTargetPort(intstr.FromInt32(9153))))
	container := corev1ac.Container().WithName(Name).WithImage(Image).WithImagePullPolicy(corev1.PullNever).
		WithArgs("-conf", "/etc/coredns/Corefile").
		WithPorts(
			corev1ac.ContainerPort().WithName("dns").WithContainerPort(53).WithProtocol(corev1.ProtocolUDP),
			corev1ac.ContainerPort().WithName("dns-tcp").WithContainerPort(53).WithProtocol(corev1.ProtocolTCP),
			corev1ac.ContainerPort().WithName("metrics").WithContainerPort(9153).WithProtocol(corev1.ProtocolTCP)).
		WithVolumeMounts(corev1ac.VolumeMount().WithName("config").WithMountPath("/etc/coredns").WithReadOnly(true)).
		WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("70Mi")}).
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("170Mi")})).
		WithLivenessProbe(corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/health").WithPort(intstr.FromInt32(8080))).
			WithInitialDelaySeconds(60).WithTimeoutSeconds(5).WithFailureThreshold(5)).
		WithReadinessProbe(corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath("/ready").WithPort(intstr.FromInt32(8181)))).
		WithSecurityContext(corev1ac.SecurityContext().WithAllowPrivilegeEscalation(false).WithReadOnlyRootFilesystem(true).
			WithCapabilities(corev1ac.Capabilities().WithAdd("NET_BIND_SERVICE").WithDrop("ALL")))
	spread := corev1ac.Affinity().WithPodAntiAffinity(corev1ac.PodAntiAffinity().WithPreferredDuringSchedulingIgnoredDuringExecution(
		corev1ac.WeightedPodAffinityTerm().WithWeight(100).WithPodAffinityTerm(corev1ac.PodAffinityTerm().
			WithTopologyKey("kubernetes.io/hostname").WithLabelSelector(metav1ac.LabelSelector().WithMatchLabels(labels)))))
	pod := corev1ac.PodSpec().WithServiceAccountName(Name).WithPriorityClassName("system-cluster-critical").
		WithDNSPolicy(corev1.DNSDefault).WithNodeSelector(map[string]string{"kubernetes.io/os": "linux"}).
		WithAffinity(spread).WithContainers(container).
		WithVolumes(corev1ac.Volume().WithName("config").WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(Name)))
	dep := appsv1ac.Deployment(Name, ns).WithLabels(labels).WithSpec(appsv1ac.DeploymentSpec().
		WithReplicas(replicas).WithSelector(metav1ac.LabelSelector().WithMatchLabels(labels)).
		WithStrategy(appsv1ac.DeploymentStrategy().WithType(appsv1.RollingUpdateDeploymentStrategyType).
			WithRollingUpdate(appsv1ac.RollingUpdateDeployment().WithMaxUnavailable(intstr.FromInt32(1)))).
		WithTemplate(corev1ac.PodTemplateSpec().WithLabels(labels).WithSpec(pod)))
	steps := []struct {
		what  string
		apply func() error
	}{
		{"ClusterRole", func() error { _, err := cs.RbacV1().ClusterRoles().Apply(ctx, role, opts); return err }},
		{"ClusterRoleBinding", func() error { _, err := cs.RbacV1().ClusterRoleBindings().Apply(ctx, binding, opts); return err }},
		{"ServiceAccount", func() error { _, err := cs.CoreV1().ServiceAccounts(ns).Apply(ctx, sa, opts); return err }},
		{"ConfigMap", func() error { _, err := cs.CoreV1().ConfigMaps(ns).Apply(ctx, cm, opts); return err }},
		{"Service", func() error { _, err := cs.CoreV1().Services(ns).Apply(ctx, svc, opts); return err }},
		{"Deployment", func() error { _, err := cs.AppsV1().Deployments(ns).Apply(ctx, dep, opts); return err }},
	}
	for _, s := range steps {
		if err := s.apply(); err != nil {
			return fmt.Errorf("cluster DNS: apply %s: %w", s.what, err)
		}
	}
	return nil
}

// WaitAvailable waits until every replica of CoreDNS is available (ready: synced with the API and serving).
func WaitAvailable(ctx context.Context, cs kubernetes.Interface) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(metav1.NamespaceSystem).Get(ctx, Name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		last = fmt.Sprintf("%d of %d replicas available", d.Status.AvailableReplicas, want)
		return d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas >= want, nil
	})
	if err != nil {
		return errors.Join(fmt.Errorf("cluster DNS not available: %s", last), err)
	}
	return nil
}
