package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/controlplane"
	cptest "berth.dev/berth/test/controlplane"

	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
)

// nodeConfig returns a client config that trusts the cluster CA and presents nothing but what the caller adds,
// dialing the way the admin config does.
func nodeConfig(t *testing.T, c *controlplane.ControlPlane) *rest.Config {
	t.Helper()
	return &rest.Config{Host: c.Endpoint, TLSClientConfig: rest.TLSClientConfig{CAFile: c.CACertPath()}, Dial: c.Admin.Dial}
}

func TestControlPlaneServesNodeJoin(t *testing.T) {
	cp := cptest.ForTest(t, controlplane.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("readyz", func(t *testing.T) {
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil || string(body) != "ok" {
			t.Fatalf("/readyz = %q, %v; want ok", body, err)
		}
	})

	tok, err := cp.MintToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.WaitTokenSigned(ctx, tok.ID()); err != nil {
		t.Fatal(err)
	}

	t.Run("cluster-info is readable anonymously and its JWS verifies with the token", func(t *testing.T) {
		anon, err := kubernetes.NewForConfig(nodeConfig(t, cp))
		if err != nil {
			t.Fatal(err)
		}
		cm, err := anon.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("anonymous get cluster-info: %v", err)
		}
		content := cm.Data[bootstrapapi.KubeConfigKey]
		sig := cm.Data[bootstrapapi.JWSSignatureKeyPrefix+tok.ID()]
		if !jws.DetachedTokenIsValid(sig, content, tok.ID(), tok.Secret()) {
			t.Fatalf("cluster-info JWS for token %s does not verify", tok.ID())
		}
		if kc, err := clientcmd.Load([]byte(content)); err != nil || len(kc.Clusters) != 1 || kc.Clusters[""].Server != cp.Advertised || cp.Advertised != cp.Endpoint {
			t.Errorf("cluster-info kubeconfig advertises %v (err %v), want the endpoint %s", kc, err, cp.Endpoint)
		}
		other, _ := bootstraptoken.Generate()
		if jws.DetachedTokenIsValid(sig, content, tok.ID(), other.Secret()) {
			t.Fatal("cluster-info JWS verifies with a wrong secret")
		}
		ji, err := cp.JoinInfo()
		if err != nil {
			t.Fatal(err)
		}
		ca, _ := cp.CACert()
		if ji.CACertPin != capin.Of(ca) || ji.Endpoint != cp.Endpoint {
			t.Errorf("join info = %+v; want pin %s, endpoint %s", ji, capin.Of(ca), cp.Endpoint)
		}
		if st, _ := os.Stat(cp.JoinInfoPath()); st == nil || st.Mode().Perm() != 0o600 {
			t.Errorf("join-info.json mode is not 0600: %v", st)
		}
	})

	t.Run("kubeadm join's ConfigMaps are readable with a bootstrap token, not anonymously", func(t *testing.T) {
		if err := cp.EnableKubeadmJoin(ctx, []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n")); err != nil {
			t.Fatal(err)
		}
		cfg := nodeConfig(t, cp)
		cfg.BearerToken = tok.Value()
		boot, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		anon, err := kubernetes.NewForConfig(nodeConfig(t, cp))
		if err != nil {
			t.Fatal(err)
		}
		version, err := cp.Client.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{
			controlplane.KubeadmConfigMap: "kubernetesVersion: " + version.GitVersion + "\n",
			controlplane.KubeletConfigMap: "cgroupDriver: systemd\n",
		} {
			cm, err := boot.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Errorf("bootstrap token: get kube-system/%s: %v", name, err)
				continue
			}
			var data string
			for _, v := range cm.Data {
				data += v
			}
			if !strings.Contains(data, want) {
				t.Errorf("kube-system/%s lacks %q:\n%s", name, want, data)
			}
			if _, err := anon.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
				t.Errorf("anonymous get kube-system/%s = %v, want 403", name, err)
			}
		}
		cm, _ := cp.Client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, controlplane.KubeadmConfigMap, metav1.GetOptions{})
		if host := strings.TrimPrefix(cp.Endpoint, "https://"); cm == nil || !strings.Contains(cm.Data["ClusterConfiguration"], "controlPlaneEndpoint: "+host+"\n") {
			t.Errorf("ClusterConfiguration's controlPlaneEndpoint is not %s: %v", host, cm)
		}
	})

	var nodeCert, nodeKey []byte
	t.Run("a bootstrap token's node-client CSR is approved and issued", func(t *testing.T) {
		cfg := nodeConfig(t, cp)
		cfg.BearerToken = tok.Value()
		boot, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		who, err := boot.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("self subject review with the token: %v", err)
		}
		if want := "system:bootstrap:" + tok.ID(); who.Status.UserInfo.Username != want {
			t.Errorf("token authenticates as %q, want %q", who.Status.UserInfo.Username, want)
		}
		nodeCert, nodeKey = requestNodeCert(t, ctx, boot, "node-a", "")
	})

	t.Run("a node renews its own client certificate", func(t *testing.T) {
		if nodeCert == nil {
			t.Skip("no node certificate: the bootstrap CSR subtest failed")
		}
		cfg := nodeConfig(t, cp)
		cfg.CertData, cfg.KeyData = nodeCert, nodeKey
		node, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		requestNodeCert(t, ctx, node, "node-a", "renewal-")
	})

	t.Run("a node's credentials carry what kube-proxy needs", func(t *testing.T) {
		if nodeCert == nil {
			t.Skip("no node certificate: the bootstrap CSR subtest failed")
		}
		cfg := nodeConfig(t, cp)
		cfg.CertData, cfg.KeyData = nodeCert, nodeKey
		node, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, ra := range []authorizationv1.ResourceAttributes{
			{Verb: "list", Resource: "services"}, {Verb: "watch", Resource: "services"},
			{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices"},
			{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"},
		} {
			r, err := node.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !r.Status.Allowed {
				t.Errorf("node may not %s %s/%s", ra.Verb, ra.Group, ra.Resource)
			}
		}
	})

	t.Run("expired and unknown tokens are refused", func(t *testing.T) {
		expired, _ := bootstraptoken.Generate()
		if err := cp.CreateToken(ctx, expired, time.Now().Add(-time.Minute), "expired"); err != nil {
			t.Fatal(err)
		}
		unknown, _ := bootstraptoken.Generate()
		wrongSecret, _ := bootstraptoken.Parse(tok.ID() + "." + unknown.Secret())
		for name, bad := range map[string]bootstraptoken.Token{"expired": expired, "unknown": unknown, "wrong secret": wrongSecret} {
			cfg := nodeConfig(t, cp)
			cfg.BearerToken = bad.Value()
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
			if !apierrors.IsUnauthorized(err) {
				t.Errorf("%s token: list CSRs = %v, want 401 Unauthorized", name, err)
			}
		}
	})
}

// requestNodeCert submits a kubelet client CSR for system:node:<name> with cs and waits for it to be approved and
// issued; it returns the certificate and key, PEM.
func requestNodeCert(t *testing.T, ctx context.Context, cs kubernetes.Interface, name, prefix string) ([]byte, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "node-csr-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
			SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}
	created, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get CSR: %v", err)
		}
		approved := false
		for _, c := range got.Status.Conditions {
			if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
				t.Fatalf("CSR %s: %s: %s", got.Name, c.Type, c.Message)
			}
			approved = approved || c.Type == certificatesv1.CertificateApproved
		}
		if approved && len(got.Status.Certificate) > 0 {
			block, _ := pem.Decode(got.Status.Certificate)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != "system:node:"+name {
				t.Errorf("issued CN = %q", cert.Subject.CommonName)
			}
			keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
			return got.Status.Certificate, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		}
		if time.Now().After(deadline) {
			t.Fatalf("CSR %s not approved and issued within 30s: %+v", got.Name, got.Status.Conditions)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRestartKeepsCAAndToken(t *testing.T) {
	dir := t.TempDir()
	cp := cptest.ForTest(t, controlplane.Config{Dir: dir})
	first, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	cp2 := cptest.ForTest(t, controlplane.Config{Dir: dir})
	second, err := cp2.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	if first.CACertPin != second.CACertPin || first.Token.Value() != second.Token.Value() {
		t.Errorf("restart on the same dir changed join material: pin %s -> %s, token %s -> %s",
			first.CACertPin, second.CACertPin, first.Token, second.Token)
	}
	if _, err := os.Stat(filepath.Join(dir, "pki", "ca.key")); err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesABadAdvertiseURL(t *testing.T) {
	for _, u := range []string{"10.0.2.100:6443", "http://10.0.2.100:6443", "https://", "https://h:1/path"} {
		_, err := controlplane.Start(context.Background(), controlplane.Config{Dir: t.TempDir(), BinDir: t.TempDir(), AdvertiseURL: u})
		if err == nil || !strings.Contains(err.Error(), "AdvertiseURL: \""+u+"\"") {
			t.Errorf("AdvertiseURL %q: Start = %v, want an error naming the field", u, err)
		}
	}
}
