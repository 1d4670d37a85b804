package cloud

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/deploy"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/dev/shareserver"
	"berth.dev/berth/internal/node/atomicfile"
)

// The cloud's StorageClasses and the Secret that holds its SMB server's credentials.
const (
	SMBClass  = "berth-smb"
	NFSClass  = "berth-nfs"
	SMBSecret = "berth-cloud-smb"
)

// Shares are the cloud's file servers, on the bridge's address: an SMB share (smbd) and an NFSv4 export
// (nfs-ganesha), each with a StorageClass whose claims get a directory of their own on it.
type Shares struct {
	// SMBSource and NFSSource are the servers' sources as a StorageClass names them.
	SMBSource, NFSSource string
	// SMBDir and NFSDir are the shared directories on this host.
	SMBDir, NFSDir string
	// Dir holds the servers' configuration, state, logs and shared files.
	Dir string
}

// StartShares starts the file servers in the cloud's namespace, puts the SMB user's password (random, made here)
// in the Secret kube-system/berth-cloud-smb, and installs the share drivers as a user does: `kubectl apply` of
// deploy/shares.yaml (the CSIDriver objects and the provisioner's Deployment) and of a StorageClass for each
// server (berth-smb, berth-nfs; written to <Dir>/shares/classes.yaml). It returns once the provisioner runs.
func (c *Cloud) StartShares(ctx context.Context) (*Shares, error) {
	s := &Shares{Dir: filepath.Join(c.cfg.Dir, "shares"),
		SMBSource: "//" + c.Gateway.String() + "/data", NFSSource: c.Gateway.String() + ":/export"}
	// The shared files are the cloud's: a new cloud starts with empty shares.
	if err := os.RemoveAll(s.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	c.Shares = s // from here Down stops what was started
	if err := c.save(); err != nil {
		return s, err
	}
	password, err := newPassword()
	if err != nil {
		return s, err
	}
	smb, err := shareserver.SMB(filepath.Join(s.Dir, "smb"), netip.AddrPortFrom(c.Gateway, 445), password)
	if err != nil {
		return s, fmt.Errorf("cloud: shares: %w", err)
	}
	nfs, err := shareserver.NFS(filepath.Join(s.Dir, "nfs"), netip.AddrPortFrom(c.Gateway, 2049))
	if err != nil {
		return s, fmt.Errorf("cloud: shares: %w", err)
	}
	s.SMBDir, s.NFSDir = smb.Dir, nfs.Dir
	group := &proc.Group{Registry: *c.cfg.Registry, Dir: s.Dir, Detached: c.cfg.Detached}
	for name, srv := range map[string]*shareserver.Server{"smbd": smb, "ganesha": nfs} {
		if err := startServer(ctx, group, c.NS, netip.AddrPortFrom(c.Gateway, ports[name]), name, srv.Path, srv.Args); err != nil {
			return s, err
		}
	}
	if err := putSecret(ctx, c.CP.Client, SMBSecret, map[string]string{"username": shareserver.SMBUser, "password": password}); err != nil {
		return s, err
	}
	classes, err := s.classes()
	if err != nil {
		return s, err
	}
	if err := atomicfile.Write(filepath.Join(s.Dir, "classes.yaml"), []byte(classes), 0o644); err != nil {
		return s, err
	}
	for what, manifest := range map[string]string{"deploy/shares.yaml": deploy.Shares, "the StorageClasses": classes} {
		if out, err := c.kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
			return s, fmt.Errorf("cloud: shares: kubectl apply %s: %w\n%s", what, err, out)
		}
	}
	if err := c.waitDeployment(ctx, metav1.NamespaceSystem, "berth-shares-provisioner"); err != nil {
		return s, fmt.Errorf("cloud: shares: %w", err)
	}
	c.cfg.Log.Info("shares started", "smb", s.SMBSource, "nfs", s.NFSSource, "classes", SMBClass+","+NFSClass)
	return s, nil
}

// classes is the StorageClasses' manifest: each claim a directory under volumes/ of its server's share, deleted
// with the claim; the SMB class names the Secret for the provisioner and for the nodes' stages.
func (s *Shares) classes() (string, error) {
	secret := map[string]string{
		"csi.storage.k8s.io/provisioner-secret-name": SMBSecret, "csi.storage.k8s.io/provisioner-secret-namespace": metav1.NamespaceSystem,
		"csi.storage.k8s.io/node-stage-secret-name": SMBSecret, "csi.storage.k8s.io/node-stage-secret-namespace": metav1.NamespaceSystem,
	}
	smb := storagev1.StorageClass{Provisioner: "smb.shares.berth.dev", Parameters: map[string]string{"source": s.SMBSource, "subDir": "volumes"}}
	for k, v := range secret {
		smb.Parameters[k] = v
	}
	nfs := storagev1.StorageClass{Provisioner: "nfs.shares.berth.dev", Parameters: map[string]string{"source": s.NFSSource, "subDir": "volumes"}}
	var docs []string
	for name, sc := range map[string]*storagev1.StorageClass{SMBClass: &smb, NFSClass: &nfs} {
		sc.APIVersion, sc.Kind, sc.Name = "storage.k8s.io/v1", "StorageClass", name
		data, err := yaml.Marshal(sc)
		if err != nil {
			return "", err
		}
		docs = append(docs, string(data))
	}
	slices.Sort(docs)
	return strings.Join(docs, "---\n"), nil
}

// RotateSMBPassword gives the SMB user of the cloud recorded in dir a new password, on the server and in the
// Secret, as an administrator rotating a share's credential does: mounts made with the old one carry on, new
// sessions need the new one.
func RotateSMBPassword(ctx context.Context, dir string, st State, cs kubernetes.Interface) error {
	if st.Shares == nil {
		return errors.New("cloud: the cloud has no file servers")
	}
	password, err := newPassword()
	if err != nil {
		return err
	}
	if err := shareserver.SetSMBPassword(filepath.Join(st.Shares.Dir, "smb"), password); err != nil {
		return fmt.Errorf("cloud: shares: %w", err)
	}
	return putSecret(ctx, cs, SMBSecret, map[string]string{"username": shareserver.SMBUser, "password": password})
}

func newPassword() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// putSecret creates or replaces the Secret kube-system/name with data.
func putSecret(ctx context.Context, cs kubernetes.Interface, name string, data map[string]string) error {
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem}, StringData: data}
	_, err := secrets.Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("cloud: Secret %s/%s: %w", metav1.NamespaceSystem, name, err)
	}
	return nil
}

// waitListening waits until addr, in namespace ns, accepts connections.
func waitListening(ctx context.Context, ns netns.NS, addr netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		conn, err := ns.DialContext(ctx, "tcp", addr.String())
		if err == nil {
			return conn.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not accept connections: %w", addr, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitDeployment waits until Deployment namespace/name has a ready replica.
func (c *Cloud) waitDeployment(ctx context.Context, namespace, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var last string
	for {
		d, err := c.CP.Client.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil && d.Status.ReadyReplicas > 0 {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d of %d replicas ready", d.Status.ReadyReplicas, d.Status.Replicas)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deployment %s/%s: not ready: %s", namespace, name, last)
		case <-time.After(2 * time.Second):
		}
	}
}

// The servers' ports on the bridge.
var ports = map[string]uint16{"smbd": 445, "ganesha": 2049}

// startServer starts a file server of group in the namespace and waits until it listens on addr.
func startServer(ctx context.Context, group *proc.Group, ns netns.NS, addr netip.AddrPort, name, path string, args []string) error {
	if _, err := group.Start(name, "nsenter", append([]string{"--net=" + ns.Path(), "--", path}, args...)...); err != nil {
		return fmt.Errorf("cloud: shares: %w", err)
	}
	if err := waitListening(ctx, ns, addr); err != nil {
		return fmt.Errorf("cloud: shares: %s: %w\n%s", name, err, proc.Tail(group.LogPath(name), 20))
	}
	return nil
}

// RestartSMB stops the SMB server of the cloud recorded in dir and starts it again, as a file server's restart
// (an upgrade, a failover) does to its clients.
func RestartSMB(ctx context.Context, st State, reg proc.Registry) error {
	if st.Shares == nil {
		return errors.New("cloud: the cloud has no file servers")
	}
	if _, err := reg.Stop(func(r proc.Record) bool { return r.Group == st.Shares.Dir && r.Name == "smbd" }, 5*time.Second); err != nil {
		return fmt.Errorf("cloud: shares: stop smbd: %w", err)
	}
	path, args := shareserver.SMBCommand(filepath.Join(st.Shares.Dir, "smb"))
	host, _, _ := strings.Cut(strings.TrimPrefix(st.Shares.SMB, "//"), "/")
	gw, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("cloud: shares: %s: %w", st.Shares.SMB, err)
	}
	group := &proc.Group{Registry: reg, Dir: st.Shares.Dir, Detached: true}
	return startServer(ctx, group, netns.NS{Name: st.Namespace}, netip.AddrPortFrom(gw, ports["smbd"]), "smbd", path, args)
}

// stopShares stops the servers of the shares recorded in dir.
func stopShares(reg proc.Registry, dir string) error {
	_, err := reg.StopGroup(dir, 5*time.Second)
	return errors.Join(err, os.RemoveAll(dir))
}
