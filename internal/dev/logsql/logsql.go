// Package logsql queries VictoriaLogs with LogsQL over its HTTP API: the local cloud's demo and the log shipper's
// tests read what was shipped with it.
package logsql

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Query runs a LogsQL query against the VictoriaLogs at base through client.
func Query(ctx context.Context, client *http.Client, base, query string, limit int) ([]map[string]string, error) {
	form := url.Values{"query": {query}}
	if limit > 0 {
		form.Set("limit", fmt.Sprint(limit))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/select/logsql/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("logs query %q: %w", query, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("logs query %q: HTTP %d", query, resp.StatusCode)
	}
	var out []map[string]string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var m map[string]string
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("logs query %q: %w", query, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}
