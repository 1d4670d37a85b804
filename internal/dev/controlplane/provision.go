package controlplane

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
)

const (
	// NodeBootstrapGroup is the group bootstrap tokens authenticate into (kubeadm's name, so kubeadm join works too).
	NodeBootstrapGroup = "system:bootstrappers:kubeadm:default-node-token"
	clusterAdminsGroup = "kubeadm:cluster-admins"
	fieldManager       = "berth-controlplane"
)

// provision applies, idempotently (server-side apply), the objects a hosted control plane provides to nodes.
func (c *ControlPlane) provision(ctx context.Context) error {
	bindings := []*rbacv1ac.ClusterRoleBindingApplyConfiguration{
		// Bootstrap tokens may create CSRs...
		clusterRoleBinding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", rbacv1.GroupKind, NodeBootstrapGroup),
		// ...and their node-client CSRs are approved automatically,
		clusterRoleBinding("kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", rbacv1.GroupKind, NodeBootstrapGroup),
		// as are nodes' renewals of their own client certificates.
		clusterRoleBinding("kubeadm:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", rbacv1.GroupKind, "system:nodes"),
		// A joining node may check whether its name is already taken.
		clusterRoleBinding("kubeadm:get-nodes", "kubeadm:get-nodes", rbacv1.GroupKind, NodeBootstrapGroup),
		clusterRoleBinding("kubeadm:cluster-admins", "cluster-admin", rbacv1.GroupKind, clusterAdminsGroup),
		// kube-proxy runs on each node with the node's own credentials, as managed services run it.
		clusterRoleBinding("berth:node-proxier", "system:node-proxier", rbacv1.GroupKind, "system:nodes"),
	}
	rbac := c.Client.RbacV1()
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	getNodes := rbacv1ac.ClusterRole("kubeadm:get-nodes").WithRules(
		rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("nodes").WithVerbs("get"))
	if _, err := rbac.ClusterRoles().Apply(ctx, getNodes, opts); err != nil {
		return fmt.Errorf("apply ClusterRole kubeadm:get-nodes: %w", err)
	}
	for _, b := range bindings {
		if _, err := rbac.ClusterRoleBindings().Apply(ctx, b, opts); err != nil {
			return fmt.Errorf("apply ClusterRoleBinding %s: %w", *b.Name, err)
		}
	}

	// cluster-info: the endpoint and CA, readable without credentials; the bootstrap signer adds a JWS per token.
	ca, err := os.ReadFile(c.CACertPath())
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[""] = &clientcmdapi.Cluster{Server: c.Advertised, CertificateAuthorityData: ca}
	kcData, err := clientcmd.Write(*kc)
	if err != nil {
		return fmt.Errorf("encode cluster-info kubeconfig: %w", err)
	}
	cm := corev1ac.ConfigMap(bootstrapapi.ConfigMapClusterInfo, metav1.NamespacePublic).
		WithData(map[string]string{bootstrapapi.KubeConfigKey: string(kcData)})
	if _, err := c.Client.CoreV1().ConfigMaps(metav1.NamespacePublic).Apply(ctx, cm, opts); err != nil {
		return fmt.Errorf("apply ConfigMap kube-public/cluster-info: %w", err)
	}
	role := rbacv1ac.Role("kubeadm:bootstrap-signer-clusterinfo", metav1.NamespacePublic).WithRules(
		rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("configmaps").
			WithResourceNames(bootstrapapi.ConfigMapClusterInfo).WithVerbs("get"))
	if _, err := rbac.Roles(metav1.NamespacePublic).Apply(ctx, role, opts); err != nil {
		return fmt.Errorf("apply Role kube-public/%s: %w", *role.Name, err)
	}
	rb := rbacv1ac.RoleBinding("kubeadm:bootstrap-signer-clusterinfo", metav1.NamespacePublic).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("Role").WithName(*role.Name)).
		WithSubjects(rbacv1ac.Subject().WithAPIGroup(rbacv1.GroupName).WithKind(rbacv1.UserKind).WithName("system:anonymous"))
	if _, err := rbac.RoleBindings(metav1.NamespacePublic).Apply(ctx, rb, opts); err != nil {
		return fmt.Errorf("apply RoleBinding kube-public/%s: %w", *rb.Name, err)
	}
	return nil
}

func clusterRoleBinding(name, role, kind, subject string) *rbacv1ac.ClusterRoleBindingApplyConfiguration {
	return rbacv1ac.ClusterRoleBinding(name).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup(rbacv1.GroupName).WithKind("ClusterRole").WithName(role)).
		WithSubjects(rbacv1ac.Subject().WithAPIGroup(rbacv1.GroupName).WithKind(kind).WithName(subject))
}

// MintToken creates a new bootstrap token that authenticates nodes and signs cluster-info, valid for ttl.
func (c *ControlPlane) MintToken(ctx context.Context, ttl time.Duration) (bootstraptoken.Token, error) {
	tok, err := bootstraptoken.Generate()
	if err != nil {
		return bootstraptoken.Token{}, err
	}
	return tok, c.CreateToken(ctx, tok, time.Now().Add(ttl), "berth node join")
}

// CreateToken stores tok as a bootstrap token Secret that expires at expires (which may be in the past, for tests
// of refusal).
func (c *ControlPlane) CreateToken(ctx context.Context, tok bootstraptoken.Token, expires time.Time, description string) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstrapapi.BootstrapTokenSecretPrefix + tok.ID(), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		StringData: map[string]string{
			bootstrapapi.BootstrapTokenIDKey:               tok.ID(),
			bootstrapapi.BootstrapTokenSecretKey:           tok.Secret(),
			bootstrapapi.BootstrapTokenExpirationKey:       expires.UTC().Format(time.RFC3339),
			bootstrapapi.BootstrapTokenDescriptionKey:      description,
			bootstrapapi.BootstrapTokenUsageAuthentication: "true",
			bootstrapapi.BootstrapTokenUsageSigningKey:     "true",
			bootstrapapi.BootstrapTokenExtraGroupsKey:      NodeBootstrapGroup,
		},
	}
	if _, err := c.Client.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create bootstrap token %s: %w", tok.ID(), err) // tok prints without its secret
	}
	return nil
}

// WaitTokenSigned waits until the bootstrap signer has put the token's JWS signature into cluster-info.
func (c *ControlPlane) WaitTokenSigned(ctx context.Context, id string) error {
	return c.waitSigned(ctx, id, nil)
}

func (c *ControlPlane) waitSigned(ctx context.Context, id string, kcm *proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var exited <-chan struct{}
	if kcm != nil {
		exited = kcm.Exited()
	}
	for {
		cm, err := c.Client.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		if err == nil && cm.Data[bootstrapapi.JWSSignatureKeyPrefix+id] != "" {
			return nil
		}
		if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			c.log.Debug("get cluster-info", "err", err)
		}
		select {
		case <-exited:
			return fmt.Errorf("kube-controller-manager exited (%v); last log lines:\n%s", kcm.ExitErr(), proc.Tail(kcm.Log, 20))
		case <-ctx.Done():
			return fmt.Errorf("cluster-info not signed for token %s: %w; controller-manager log:\n%s", id, ctx.Err(), proc.Tail(c.LogPath("kube-controller-manager"), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// JoinInfo is what an operator hands to a node: the endpoint, a bootstrap token and the CA pin.
type JoinInfo struct {
	Endpoint  string               `json:"endpoint"`
	Token     bootstraptoken.Token `json:"-"`
	CACertPin capin.Pin            `json:"caCertPin"`
	Expires   time.Time            `json:"expires"`
}

// joinInfoFile is JoinInfo as stored on disk (0600): the token in full.
type joinInfoFile struct {
	JoinInfo
	Token string `json:"token"`
}

// JoinInfoPath is where Start keeps the current join material (0600: it holds the token).
func (c *ControlPlane) JoinInfoPath() string { return c.path("join-info.json") }

// ensureJoinToken reuses the stored token while it has more than an hour left, else mints one for 24h, and waits
// for its cluster-info signature.
func (c *ControlPlane) ensureJoinToken(ctx context.Context, kcm *proc.Process) (JoinInfo, error) {
	ji, err := ReadJoinInfo(c.cfg.Dir)
	if err == nil && time.Until(ji.Expires) > time.Hour {
		_, err = c.Client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, bootstrapapi.BootstrapTokenSecretPrefix+ji.Token.ID(), metav1.GetOptions{})
	}
	if err != nil || time.Until(ji.Expires) <= time.Hour {
		ji.Expires = time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
		if ji.Token, err = bootstraptoken.Generate(); err != nil {
			return JoinInfo{}, err
		}
		if err := c.CreateToken(ctx, ji.Token, ji.Expires, "berth-dev join token"); err != nil {
			return JoinInfo{}, err
		}
	}
	ji.Endpoint = c.Endpoint
	if ji.CACertPin, err = c.CAPin(); err != nil {
		return JoinInfo{}, err
	}
	data, _ := json.MarshalIndent(joinInfoFile{JoinInfo: ji, Token: ji.Token.Value()}, "", "  ")
	if err := writeSecret(c.JoinInfoPath(), append(data, '\n')); err != nil {
		return JoinInfo{}, err
	}
	return ji, c.waitSigned(ctx, ji.Token.ID(), kcm)
}

// JoinInfo returns the current join material.
func (c *ControlPlane) JoinInfo() (JoinInfo, error) { return ReadJoinInfo(c.cfg.Dir) }

// ReadJoinInfo reads the join material a control plane stored in dir.
func ReadJoinInfo(dir string) (JoinInfo, error) {
	path := filepath.Join(dir, "join-info.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return JoinInfo{}, err
	}
	var f joinInfoFile
	if err := json.Unmarshal(data, &f); err != nil {
		return JoinInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	if f.JoinInfo.Token, err = bootstraptoken.Parse(f.Token); err != nil {
		return JoinInfo{}, fmt.Errorf("%s: token: %w", path, err)
	}
	return f.JoinInfo, nil
}

// CACert returns the cluster CA certificate.
func (c *ControlPlane) CACert() (*x509.Certificate, error) {
	data, err := os.ReadFile(c.CACertPath())
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM certificate", c.CACertPath())
	}
	return x509.ParseCertificate(block.Bytes)
}

// CAPin returns the CA's public-key pin (kubeadm's discovery-token-ca-cert-hash).
func (c *ControlPlane) CAPin() (capin.Pin, error) {
	cert, err := c.CACert()
	if err != nil {
		return "", err
	}
	return capin.Of(cert), nil
}

func writeSecret(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }
