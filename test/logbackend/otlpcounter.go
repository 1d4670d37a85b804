package logbackend

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/proto"
)

// OTLPCounter is an OTLP/HTTP logs endpoint for benchmarks: it decodes each request on /v1/logs, counts its
// records and acknowledges it (anything else is answered 400).
type OTLPCounter struct {
	*httptest.Server
	Records, Requests atomic.Int64

	mu     sync.Mutex
	target int64
	done   chan struct{}
}

// Await returns a channel closed once the backend holds n records.
func (c *OTLPCounter) Await(n int64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	done := make(chan struct{})
	if c.Records.Load() >= n {
		close(done)
		return done
	}
	c.target, c.done = n, done
	return done
}

// StartOTLPCounter starts one on a loopback port; Close stops it.
func StartOTLPCounter() *OTLPCounter {
	c := &OTLPCounter{}
	ok, _ := proto.Marshal(&collogs.ExportLogsServiceResponse{})
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req collogs.ExportLogsServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if err != nil || r.URL.Path != "/v1/logs" {
			http.Error(w, fmt.Sprintf("%s: %v", r.URL.Path, err), http.StatusBadRequest)
			return
		}
		n := 0
		for _, rl := range req.ResourceLogs {
			for _, sl := range rl.ScopeLogs {
				n += len(sl.LogRecords)
			}
		}
		total := c.Records.Add(int64(n))
		c.mu.Lock()
		if c.done != nil && total >= c.target {
			close(c.done)
			c.done = nil
		}
		c.mu.Unlock()
		c.Requests.Add(1)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(ok)
	}))
	return c
}
