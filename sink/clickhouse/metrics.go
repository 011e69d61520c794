package clickhouse

import "github.com/prometheus/client_golang/prometheus"

// metrics are the sink's Prometheus metrics. Labels are bounded: the table
// name and a fixed error reason.
type metrics struct {
	rows        *prometheus.CounterVec
	blocks      *prometheus.CounterVec
	errors      *prometheus.CounterVec
	duplicates  prometheus.Counter
	buffered    prometheus.Gauge
	spillBytes  prometheus.Gauge
	spillBlocks prometheus.Gauge
	lag         *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	l := prometheus.Labels{"sink": "clickhouse"}
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_sink_rows_total", Help: "Rows stored by the sink, by table.", ConstLabels: l,
		}, []string{"table"}),
		blocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_sink_blocks_total", Help: "Blocks (inserts or files) stored by the sink, by table.", ConstLabels: l,
		}, []string{"table"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_sink_errors_total", Help: "Failed sink operations, by table and reason (insert, spill, unspill).", ConstLabels: l,
		}, []string{"table", "reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccflow_sink_duplicate_batches_total", Help: "Flow batches not stored again because the sink stored the same batch recently (redelivery).", ConstLabels: l,
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_sink_buffered_rows", Help: "Rows held in memory by the sink, not yet stored.", ConstLabels: l,
		}),
		spillBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_sink_spill_bytes", Help: "Bytes of blocks spilled to disk while the destination is unavailable.", ConstLabels: l,
		}),
		spillBlocks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_sink_spill_blocks", Help: "Blocks spilled to disk, not yet stored.", ConstLabels: l,
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ccflow_sink_lag_seconds", Help: "Age of the oldest row not yet stored, by table (0 when none).", ConstLabels: l,
		}, []string{"table"}),
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.duplicates, m.blocks, m.errors, m.buffered, m.spillBytes, m.spillBlocks, m.lag)
	}
	return m
}
