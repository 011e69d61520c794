//go:build tools

// This file pins the libraries the stages are built on while they are being
// written, so that `go mod tidy` keeps them; it is not compiled.
package ccflow

import (
	_ "github.com/ClickHouse/clickhouse-go/v2"
	_ "github.com/apache/arrow/go/v15/arrow"
	_ "github.com/apache/arrow/go/v15/parquet/pqarrow"
	_ "github.com/axiomhq/hyperloglog"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/gaissmai/bart"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/maxmind/mmdbwriter"
	_ "github.com/netsampler/goflow2/v2/decoders/netflow"
	_ "github.com/netsampler/goflow2/v2/decoders/sflow"
	_ "github.com/oschwald/maxminddb-golang/v2"
	_ "github.com/phaag/go-nfdump"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/segmentio/kafka-go"
	_ "github.com/spaolacci/murmur3"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "golang.org/x/net/ipv4"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sys/unix"
)
