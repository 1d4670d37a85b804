package config

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dropInsWithin runs DropIns on dir, failing the test if it does not return within a few seconds (a FIFO would
// block a plain read forever).
func dropInsWithin(t *testing.T, dir string) ([]Source, error) {
	t.Helper()
	type result struct {
		s   []Source
		err error
	}
	ch := make(chan result, 1)
	go func() { s, err := DropIns(dir); ch <- result{s, err} }()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("DropIns(%s) hung", dir)
		return nil, nil
	}
}

// Only regular files of bounded size are read: a FIFO, a symlink to a device, or a huge file is refused, naming the
// file, instead of hanging the agent or running it out of memory. A symlink to a regular file is fine.
func TestDropInsReadOnlyBoundedRegularFiles(t *testing.T) {
	for name, make := range map[string]func(path string) error{
		"fifo":              func(p string) error { return syscall.Mkfifo(p, 0o600) },
		"symlink to a tty":  func(p string) error { return os.Symlink("/dev/zero", p) },
		"larger than 1 MiB": func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("#"), 1<<20+1), 0o600) },
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, "10-bad.yaml")
		if err := make(p); err != nil {
			t.Fatal(err)
		}
		_, err := dropInsWithin(t, dir)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want an error naming %s", name, err, p)
		}
	}
	dir := t.TempDir()
	real := filepath.Join(t.TempDir(), "node.yaml")
	os.WriteFile(real, []byte(base), 0o600)
	os.Symlink(real, filepath.Join(dir, "10-link.yaml"))
	if s, err := dropInsWithin(t, dir); err != nil || len(s) != 1 || string(s[0].Data) != base {
		t.Errorf("symlink to a regular file: %v %v", s, err)
	}
}

// User data is read whole or refused, naming the part: nothing is silently cut short or taken for "no NodeConfig".
func TestUserDataFailsLoudly(t *testing.T) {
	big := append([]byte(base), bytes.Repeat([]byte("#"), 1<<20)...)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(big)
	zw.Close()
	gzPart := "--BOUNDARY\r\nContent-Type: " + MediaType + "\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(gz.Bytes()) + "\r\n--BOUNDARY--\r\n"
	head := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n"
	full := string(multipartUserData([]byte(base), false))
	for name, tc := range map[string]struct{ data, want string }{
		"part over 1 MiB":         {string(multipartUserData(big, false)), "part 2"},
		"gzip over 1 MiB":         {head + gzPart, "part 1"},
		"cut off midway":          {full[:len(full)-40], "part 2"},
		"broken header line":      {"MIME-Version: 1.0\r\nContent-Type multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n--BOUNDARY\r\n", "header"},
		"part with a broken head": {strings.Replace(full, "Content-Type: "+MediaType, "Content-Type "+MediaType, 1), "part 2"},
	} {
		got, err := FromUserData([]byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %d bytes, %v; want an error naming %q", name, len(got), err, tc.want)
		}
	}
}

// A NodeConfig part inside a nested multipart (cloud-init accepts nesting) is found.
func TestUserDataNestedMultipart(t *testing.T) {
	inner := multipartUserData([]byte(base), true)
	// The inner document's own headers become the part's headers.
	hdr, body, _ := strings.Cut(string(inner), "\r\n\r\n")
	outer := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"OUTER\"\r\n\r\n" +
		"--OUTER\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\ntrue\n\r\n" +
		"--OUTER\r\n" + strings.Replace(hdr, "MIME-Version: 1.0\r\n", "", 1) + "\r\n\r\n" + body + "\r\n--OUTER--\r\n"
	got, err := FromUserData([]byte(outer))
	if err != nil || strings.TrimSpace(string(got)) != strings.TrimSpace(base) {
		t.Errorf("nested: %q, %v", got, err)
	}
}

// A huge bad value is cut short in the message (it goes to the journal), not echoed whole.
func TestLongValuesAreCutInMessages(t *testing.T) {
	long := strings.Repeat("x", 100000)
	doc := strings.Replace(base, "labels: {pool: a, zone: z1}", "labels: {pool: "+long+"}", 1)
	_, err := Merge([]Source{{Name: "10.yaml", Data: []byte(doc)}})
	if err == nil || !strings.Contains(err.Error(), "spec.node.labels[pool]") {
		t.Fatalf("%v", err)
	}
	if len(err.Error()) > 2000 {
		t.Errorf("message is %d bytes long; the value was not cut", len(err.Error()))
	}
}

// A misspelt field in one drop-in and an invalid value elsewhere are reported together, each named.
func TestMergeReportsEveryProblemInOnePass(t *testing.T) {
	typo := "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    extraArgz: {v: \"2\"}\n"
	bad := "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  cni: {mode: calico}\n"
	_, err := Merge([]Source{{"10.yaml", []byte(base)}, {"20-typo.yaml", []byte(typo)}, {"30-bad.yaml", []byte(bad)}})
	for _, want := range []string{`20-typo.yaml: parse NodeConfig: unknown field "spec.kubelet.extraArgz"`, `spec.cni.mode: Unsupported value: "calico"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %s", err, want)
		}
	}
}
