package config

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const base = `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://10.0.0.1:6443
    discovery:
      token: abcdef.0123456789abcdef
      caCertHashes: ["sha256:125afbfada2e3a34d8de20f795abc48a18459212cf7dd07dee460005278b32b9"]
  node:
    labels: {pool: a, zone: z1}
  sysctls: {net.core.somaxconn: "4096"}
`

func multipartUserData(part []byte, encode bool) []byte {
	var b bytes.Buffer
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n")
	b.WriteString("--BOUNDARY\r\nContent-Type: text/cloud-config\r\n\r\n#cloud-config\nlocale: C.UTF-8\n\r\n")
	b.WriteString("--BOUNDARY\r\nContent-Type: " + MediaType + "\r\n")
	if encode {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(part)
		zw.Close()
		b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(gz.Bytes()) + "\r\n")
	} else {
		b.WriteString("\r\n")
		b.Write(part)
		b.WriteString("\r\n")
	}
	b.WriteString("--BOUNDARY--\r\n")
	return b.Bytes()
}

func TestUserDataPart(t *testing.T) {
	for _, encode := range []bool{false, true} {
		got, err := FromUserData(multipartUserData([]byte(base), encode))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) != strings.TrimSpace(base) {
			t.Errorf("encode=%v: part = %q", encode, got)
		}
	}
	if got, err := FromUserData([]byte("#cloud-config\nruncmd: [true]\n")); got != nil || err != nil {
		t.Errorf("plain cloud-config: %q, %v; want no part and no error", got, err)
	}
	two := bytes.Replace(multipartUserData([]byte(base), false), []byte("--BOUNDARY--"),
		[]byte("--BOUNDARY\r\nContent-Type: "+MediaType+"\r\n\r\nx\r\n--BOUNDARY--"), 1)
	if _, err := FromUserData(two); err == nil || !strings.Contains(err.Error(), "second") {
		t.Errorf("two NodeConfig parts: %v", err)
	}
}

func TestDropInsOverrideInOrder(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "20-zone.yaml"), []byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  node:\n    labels: {zone: z2}\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "10-pool.json"), []byte(`{"apiVersion":"node.berth.dev/v1alpha1","kind":"NodeConfig","spec":{"node":{"labels":{"pool":"b","zone":"zx"}},"sysctls":null}}`), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not config"), 0o600)
	drops, err := DropIns(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Merge(append([]Source{{Name: "user-data", Data: []byte(base)}}, drops...))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.Spec.Node.Labels; l["pool"] != "b" || l["zone"] != "z2" {
		t.Errorf("labels = %v; want pool=b (10-pool) and zone=z2 (20-zone, later)", l)
	}
	if c.Spec.Sysctls != nil {
		t.Errorf("sysctls = %v; null in a drop-in deletes", c.Spec.Sysctls)
	}
	if c.Spec.ControlPlane.Discovery.Token.Reveal() != "abcdef.0123456789abcdef" {
		t.Error("the token did not survive the merge")
	}
}

func TestMergeErrorsNameTheSource(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "50-typo.yaml"), []byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  nodee: {}\n"), 0o600)
	drops, _ := DropIns(dir)
	_, err := Merge(append([]Source{{Name: "user-data", Data: []byte(base)}}, drops...))
	if err == nil || !strings.Contains(err.Error(), "50-typo.yaml") || !strings.Contains(err.Error(), "nodee") {
		t.Errorf("err = %v; want the file and the unknown field named", err)
	}
	os.Remove(filepath.Join(dir, "50-typo.yaml"))
	os.WriteFile(filepath.Join(dir, "60-bad.yaml"), []byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  cni: {mode: weave}\n"), 0o600)
	drops, _ = DropIns(dir)
	_, err = Merge(append([]Source{{Name: "user-data", Data: []byte(base)}}, drops...))
	if err == nil || !strings.Contains(err.Error(), "spec.cni.mode") {
		t.Errorf("err = %v; want the field path", err)
	}
	if _, err := Merge(nil); err == nil || !strings.Contains(err.Error(), "no NodeConfig") {
		t.Errorf("no sources: %v", err)
	}
}

// go test -fuzz FuzzFromUserData ./agent/config: arbitrary user data never panics the reader. Seeds run as tests.
func FuzzFromUserData(f *testing.F) {
	f.Add(multipartUserData([]byte(base), false))
	f.Add(multipartUserData([]byte(base), true))
	f.Add([]byte("#cloud-config\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: application/node.berth.dev\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n--x--\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		part, err := FromUserData(data)
		if err == nil && part != nil {
			_, _ = Merge([]Source{{Name: "user-data", Data: part}})
		}
	})
}
