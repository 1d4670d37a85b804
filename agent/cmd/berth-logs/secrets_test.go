package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"berth.dev/berth/test/certs"
	"berth.dev/berth/test/logbackend"
)

// An https backend that asks for a password, as a real deployment has it: a real VictoriaLogs over TLS with basic
// authentication, its CA in tls.caFile and the Authorization header in a Secret's file (headersFromFiles, the
// kubelet's way of updating it). The password is rotated on the backend first: the shipper's requests are refused
// (401) and retried, not dead-lettered, the lines held in memory meanwhile (berth_logs_buffered_records), until
// the Secret holds the new one; then every line arrives, none lost.
func TestHTTPSSinkWithRotatedSecret(t *testing.T) {
	f := newFixture(t, filepath.Join("demo_hello_0c0c0c0c-0000-0000-0000-000000000000", "web"))
	c := certs.Write(t, t.TempDir())
	vl := logbackend.StartVictoriaLogsWith(t, logbackend.Options{CertFile: c.ServerCert, KeyFile: c.ServerKey, CA: c.CA, User: "berth", Password: "first"})
	basic := func(p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte("berth:"+p)) + "\n" }
	secrets := filepath.Join(f.dir, "secrets")
	auth := configMapUpdate(t, secrets, "authorization", basic("first"))
	config := writeShipperConfig(t, f.dir, f.root, f.state, fmt.Sprintf(`
  sinks:
  - name: otlp
    type: otlp
    url: "%s/insert/opentelemetry"
    headersFromFiles: {Authorization: %s}
    tls: {caFile: %s}
    batch: {linger: 100ms}
    retry: {initial: 100ms, max: 500ms}
`, vl.URL, auth, c.CA))
	out := f.run(t, config)
	logbackend.AppendCRI(t, f.logFile, "secret line %04d", 0, 100)
	vl.Count(t, `"secret line"`, 100)

	vl.Stop()
	vl.SetPassword("second")
	vl.Start()
	logbackend.AppendCRI(t, f.logFile, "secret line %04d", 100, 200)
	// Refused and retried, the 100 lines held in memory (the buffer is one batch; the files hold the rest).
	f.metricsHave(t, "retries while the Secret holds the old password", `berth_logs_retries_total{sink="otlp"} `,
		`berth_logs_buffered_records{sink="otlp"} 100`+"\n")
	configMapUpdate(t, secrets, "authorization", basic("second"))
	got := vl.Count(t, `"secret line"`, 200)
	seen := map[string]bool{}
	for _, e := range got {
		seen[e["_msg"]] = true
	}
	if len(seen) != 200 {
		t.Errorf("%d distinct lines of 200", len(seen))
	}
	f.metricsHave(t, "the buffer emptied", `berth_logs_buffered_records{sink="otlp"} 0`+"\n", `berth_logs_buffered_bytes{sink="otlp"} 0`+"\n")
	if _, err := os.Stat(filepath.Join(f.state, "otlp.dead-letters.ndjson")); !os.IsNotExist(err) {
		t.Errorf("dead letters were written (%v):\n%s", err, out.String())
	}
}
