// Package deploy holds the Kubernetes manifests a cluster needs for berth's cluster-side parts, as files a user
// applies with kubectl, embedded so the local cloud applies the very same ones.
package deploy

import (
	_ "embed"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// LBRBAC is lb-rbac.yaml: the load balancer's ServiceAccounts and their roles.
//
//go:embed lb-rbac.yaml
var LBRBAC string

// Logs is logs.yaml: the log shipper's DaemonSet, its ServiceAccount, role and ConfigMap (LogsConfigMap, whose
// LogsConfigKey holds the LogShipperConfig).
//
//go:embed logs.yaml
var Logs string

// Shares is shares.yaml: the CSIDriver objects of berth's share drivers.
//
//go:embed shares.yaml
var Shares string

// The log shipper's ConfigMap in kube-system and its key.
const (
	LogsConfigMap = "berth-logs"
	LogsConfigKey = "config.yaml"
)

// Objects decodes a multi-document manifest into typed objects.
func Objects(manifest string) ([]runtime.Object, error) {
	var out []runtime.Object
	for i, doc := range strings.Split(manifest, "\n---\n") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		out = append(out, obj)
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// LogsWith is the log shipper's manifest (Logs) with config, a LogShipperConfig document, in its ConfigMap: what a
// user who edited the ConfigMap applies.
func LogsWith(config string) (string, error) {
	docs := strings.Split(Logs, "\n---\n")
	for i, doc := range docs {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return "", fmt.Errorf("logs.yaml document %d: %w", i+1, err)
		}
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Name != LogsConfigMap {
			continue
		}
		cm.Data = map[string]string{LogsConfigKey: config}
		cm.APIVersion, cm.Kind = "v1", "ConfigMap"
		out, err := yaml.Marshal(cm)
		if err != nil {
			return "", err
		}
		docs[i] = string(out)
		return strings.Join(docs, "\n---\n"), nil
	}
	return "", fmt.Errorf("logs.yaml has no ConfigMap %s", LogsConfigMap)
}
