package deploy

import (
	"fmt"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	logsv1 "berth.dev/berth/agent/api/logs/v1alpha1"
	"berth.dev/berth/internal/node/layout"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"

	"berth.dev/berth/agent/shares/plugin"
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

// The log shipper's manifest runs the image every node pre-caches, with least privilege, and its ConfigMap holds a
// valid LogShipperConfig whose paths are the ones the DaemonSet mounts.
func TestLogsManifest(t *testing.T) {
	objs, err := Objects(Logs)
	if err != nil {
		t.Fatal(err)
	}
	var ds *appsv1.DaemonSet
	var cm *corev1.ConfigMap
	var role *rbacv1.ClusterRole
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			ds = o
		case *corev1.ConfigMap:
			cm = o
		case *rbacv1.ClusterRole:
			role = o
		}
	}
	if ds == nil || cm == nil || role == nil || cm.Name != LogsConfigMap {
		t.Fatalf("want a DaemonSet, a ConfigMap %s and a ClusterRole; got %d objects", LogsConfigMap, len(objs))
	}
	if len(role.Rules) != 2 || fmt.Sprint(role.Rules[0].Resources, role.Rules[0].Verbs) != "[pods] [list watch]" ||
		fmt.Sprint(role.Rules[1].Resources, role.Rules[1].Verbs) != "[nodes/stats] [get]" {
		t.Errorf("the role grants %+v, want list and watch of pods and get of nodes/stats only", role.Rules)
	}
	cfg, err := logsv1.Decode([]byte(cm.Data[LogsConfigKey]))
	if err != nil {
		t.Fatalf("the ConfigMap's %s: %v", LogsConfigKey, err)
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("the ConfigMap's config: %v", errs.ToAggregate())
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if c.Image != layout.LogsImage || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s (%s), want the pre-cached %s", c.Image, c.ImagePullPolicy, layout.LogsImage)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged != nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		fmt.Sprint(sc.Capabilities.Drop, sc.Capabilities.Add) != "[ALL] [SYS_CHROOT]" {
		t.Errorf("security context %+v: want all capabilities dropped but SYS_CHROOT, a read-only root, no escalation", sc)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v: want requests and a memory limit", c.Resources)
	}
	if len(c.Command) < 2 || c.Command[0] != "/berth-logs" || c.Command[1] != "run" {
		t.Errorf("command %q, want the image's /berth-logs run", c.Command)
	}
	// The Go runtime's soft memory limit is the container's limit (GOMEMLIMIT takes bytes).
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}) {
		t.Error("no GOMEMLIMIT from limits.memory")
	}
	// https sinks trust the host's CA certificates, under the host's root the DaemonSet mounts.
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "SSL_CERT_DIR" && strings.HasPrefix(e.Value, cfg.Spec.Journal.HostRoot+"/etc/ssl/certs")
	}) {
		t.Error("no SSL_CERT_DIR under the host's root")
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
		if !m.ReadOnly && m.MountPath != cfg.Spec.StateDir {
			t.Errorf("%s is mounted writable; only the state directory may be", m.MountPath)
		}
	}
	// Credentials come from an optional Secret, mounted read-only for the owner only.
	if !slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.Optional != nil && *v.Secret.Optional && v.Secret.DefaultMode != nil && *v.Secret.DefaultMode == 0o400 &&
			mounts["/etc/berth/logs-secrets"].Name == v.Name
	}) {
		t.Error("no optional credentials Secret (mode 0400) mounted at /etc/berth/logs-secrets")
	}
	for what, p := range map[string]string{"podLogs.path": cfg.Spec.PodLogs.Path, "stateDir": cfg.Spec.StateDir, "journal.hostRoot": cfg.Spec.Journal.HostRoot,
		"metrics.node.hostRoot": cfg.Spec.Metrics.Node.HostRoot, "metrics.pods.kubeletCertFile's root": "/" + strings.Split(cfg.Defaulted().Metrics.Pods.KubeletCertFile, "/")[1]} {
		if _, ok := mounts[p]; !ok {
			t.Errorf("the config's %s %s is not mounted", what, p)
		}
	}
	var configArg string
	for _, a := range c.Command {
		if v, ok := strings.CutPrefix(a, "-config="); ok {
			configArg = v
		}
	}
	if m, ok := mounts[path.Dir(configArg)]; !ok || m.Name != "config" {
		t.Errorf("-config=%s is not in the ConfigMap's mount", configArg)
	}
}

// LogsWith replaces only the ConfigMap's config.
func TestLogsWith(t *testing.T) {
	const config = "apiVersion: logs.berth.dev/v1alpha1\nkind: LogShipperConfig\nspec:\n  sinks: []\n"
	m, err := LogsWith(config)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(m)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := Objects(Logs)
	if len(objs) != len(orig) {
		t.Fatalf("%d objects, want %d", len(objs), len(orig))
	}
	for i, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			if cm.Data[LogsConfigKey] != config || cm.Name != LogsConfigMap || cm.Namespace != "kube-system" {
				t.Errorf("ConfigMap %s/%s holds %q", cm.Namespace, cm.Name, cm.Data)
			}
		} else if !reflect.DeepEqual(o, orig[i]) {
			t.Errorf("object %d (%T) changed", i, o)
		}
	}
}

// The share drivers' manifest: a CSIDriver per driver the agent registers (no attach, fsGroupPolicy File), and the
// provisioner: the agent's pre-cached image running `csi controller` as its ServiceAccount, two candidates, and a
// role with what the provisioner library uses and nothing more (TestProvisionsOnARealControlPlane runs it with
// exactly this RBAC against a real apiserver).
func TestSharesManifest(t *testing.T) {
	objs, err := Objects(Shares)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var dep *appsv1.Deployment
	var role *rbacv1.ClusterRole
	for _, o := range objs {
		switch o := o.(type) {
		case *storagev1.CSIDriver:
			names = append(names, o.Name)
			if o.Spec.AttachRequired == nil || *o.Spec.AttachRequired || o.Spec.FSGroupPolicy == nil || *o.Spec.FSGroupPolicy != storagev1.FileFSGroupPolicy {
				t.Errorf("%s: attachRequired %v, fsGroupPolicy %v; want false, File", o.Name, o.Spec.AttachRequired, o.Spec.FSGroupPolicy)
			}
		case *appsv1.Deployment:
			dep = o
		case *rbacv1.ClusterRole:
			role = o
		}
	}
	if want := []string{plugin.SMB, plugin.NFS}; !slices.Equal(names, want) {
		t.Errorf("CSIDrivers %v, want %v (the drivers berth-agent csi node registers)", names, want)
	}
	if dep == nil || role == nil {
		t.Fatalf("want the provisioner's Deployment and ClusterRole; got %d objects", len(objs))
	}
	var rules []string
	for _, r := range role.Rules {
		rules = append(rules, fmt.Sprint(r.Resources, r.Verbs))
	}
	if got, want := strings.Join(rules, " "), "[persistentvolumes] [get list watch create delete patch] [persistentvolumeclaims] [get list watch update] "+
		"[storageclasses] [get list watch] [events] [create update patch] [secrets] [get]"; got != want {
		t.Errorf("the provisioner's role grants %s, want %s", got, want)
	}
	spec := dep.Spec.Template.Spec
	c := spec.Containers[0]
	if c.Image != layout.AgentImage || c.ImagePullPolicy != corev1.PullIfNotPresent || strings.Join(c.Command, " ") != "/berth-agent csi controller" {
		t.Errorf("container %s (%s) %q, want the pre-cached %s running /berth-agent csi controller", c.Image, c.ImagePullPolicy, c.Command, layout.AgentImage)
	}
	if spec.ServiceAccountName != "berth-shares-provisioner" || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 || dep.Namespace != "kube-system" {
		t.Errorf("Deployment %s/%s: ServiceAccount %s, replicas %v", dep.Namespace, dep.Name, spec.ServiceAccountName, dep.Spec.Replicas)
	}
	if c.Resources.Limits.Memory().IsZero() || c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("resources %+v, security context %+v: want a memory limit and a read-only root", c.Resources, c.SecurityContext)
	}
}
