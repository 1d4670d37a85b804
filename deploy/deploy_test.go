package deploy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The load balancer's manifest decodes into ServiceAccounts, roles and bindings, each binding naming a
// role and a ServiceAccount the manifest defines.
func TestLBRBACDecodes(t *testing.T) {
	objs, err := Objects(LBRBAC)
	if err != nil {
		t.Fatal(err)
	}
	sas, roles := map[string]bool{}, map[string]bool{}
	var bindings [][2]string
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			sas[o.Namespace+"/"+o.Name] = true
		case *rbacv1.ClusterRole:
			roles["ClusterRole/"+o.Name] = true
		case *rbacv1.Role:
			roles["Role/"+o.Name] = true
		case *rbacv1.ClusterRoleBinding:
			bindings = append(bindings, [2]string{o.RoleRef.Kind + "/" + o.RoleRef.Name, o.Subjects[0].Namespace + "/" + o.Subjects[0].Name})
		case *rbacv1.RoleBinding:
			bindings = append(bindings, [2]string{o.RoleRef.Kind + "/" + o.RoleRef.Name, o.Subjects[0].Namespace + "/" + o.Subjects[0].Name})
		default:
			t.Errorf("unexpected %T", o)
		}
	}
	if len(sas) != 2 || len(roles) != 4 || len(bindings) != 4 {
		t.Errorf("%d ServiceAccounts, %d roles, %d bindings; want 2, 4, 4", len(sas), len(roles), len(bindings))
	}
	for _, b := range bindings {
		if !roles[b[0]] || !sas[b[1]] {
			t.Errorf("binding of %s to %s: not both defined", b[0], b[1])
		}
	}
	if _, err := Objects("apiVersion: v1\nkind: Nonsense\n"); err == nil {
		t.Error("an unknown kind decoded")
	}
}
