//go:build tools

// Package tools pins VictoriaLogs, the log backend the log shipper's tests and the local cloud ship to (it takes
// OTLP protobuf, Loki push and Elasticsearch bulk): v1.52.2. Build with `tools/build.sh victorialogs`.
package tools

import _ "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs"
