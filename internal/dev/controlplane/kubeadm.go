package controlplane

import (
	"context"
	"fmt"
	"net/url"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"sigs.k8s.io/yaml"
)

// The ConfigMaps `kubeadm join` reads from kube-system with the bootstrap token's credentials, after discovery.
const (
	KubeadmConfigMap = "kubeadm-config"
	KubeletConfigMap = "kubelet-config"
)

// EnableKubeadmJoin publishes what `kubeadm join` reads besides cluster-info, the way `kubeadm init` does: the
// ClusterConfiguration in kubeadm-config, the cluster's KubeletConfiguration in kubelet-config, and Roles that
// let bootstrap tokens and nodes read both. berth's agent needs none of it; tests use it to join a node with
// kubeadm to the same control plane (the benchmark side by side with berth).
//
// kubeletConfig is a KubeletConfiguration document (kubelet.config.k8s.io/v1beta1); kubeadm writes it to the
// node's /var/lib/kubelet/config.yaml. The ConfigMaps carry no kubeadm checksum annotation, so kubeadm treats
// them as user supplied and uses them as they are.
func (c *ControlPlane) EnableKubeadmJoin(ctx context.Context, kubeletConfig []byte) error {
	version, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("kubeadm-config: apiserver version: %w", err)
	}
	u, err := url.Parse(c.Advertised)
	if err != nil {
		return fmt.Errorf("kubeadm-config: advertised URL: %w", err)
	}
	cluster, err := yaml.Marshal(map[string]any{
		"apiVersion":           "kubeadm.k8s.io/v1beta4",
		"kind":                 "ClusterConfiguration",
		"clusterName":          "kubernetes",
		"kubernetesVersion":    version.GitVersion,
		"controlPlaneEndpoint": u.Host,
		"certificatesDir":      "/etc/kubernetes/pki",
		"networking": map[string]string{
			"dnsDomain":     c.cfg.ClusterDomain,
			"serviceSubnet": c.cfg.ServiceCIDR.String(),
			"podSubnet":     c.cfg.ClusterCIDR.String(),
		},
	})
	if err != nil {
		return err
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	rbac := c.Client.RbacV1()
	for _, cm := range []struct{ name, key, data string }{
		{KubeadmConfigMap, "ClusterConfiguration", string(cluster)},
		{KubeletConfigMap, "kubelet", string(kubeletConfig)},
	} {
		ac := corev1ac.ConfigMap(cm.name, metav1.NamespaceSystem).WithData(map[string]string{cm.key: cm.data})
		if _, err := c.Client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Apply(ctx, ac, opts); err != nil {
			return fmt.Errorf("apply ConfigMap kube-system/%s: %w", cm.name, err)
		}
		// kubeadm's Role names: kubeadm:nodes-kubeadm-config and kubeadm:kubelet-config.
		name := "kubeadm:" + cm.name
		if cm.name == KubeadmConfigMap {
			name = "kubeadm:nodes-kubeadm-config"
		}
		role := rbacv1ac.Role(name, metav1.NamespaceSystem).WithRules(rbacv1ac.PolicyRule().
			WithAPIGroups("").WithResources("configmaps").WithResourceNames(cm.name).WithVerbs("get"))
		if _, err := rbac.Roles(metav1.NamespaceSystem).Apply(ctx, role, opts); err != nil {
			return fmt.Errorf("apply Role kube-system/%s: %w", name, err)
		}
		rb := rbacv1ac.RoleBinding(name, metav1.NamespaceSystem).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("Role").WithName(name)).
			WithSubjects(
				rbacv1ac.Subject().WithAPIGroup(rbacv1.GroupName).WithKind(rbacv1.GroupKind).WithName(NodeBootstrapGroup),
				rbacv1ac.Subject().WithAPIGroup(rbacv1.GroupName).WithKind(rbacv1.GroupKind).WithName("system:nodes"))
		if _, err := rbac.RoleBindings(metav1.NamespaceSystem).Apply(ctx, rb, opts); err != nil {
			return fmt.Errorf("apply RoleBinding kube-system/%s: %w", name, err)
		}
	}
	return nil
}
