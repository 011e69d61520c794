package parquet

import "github.com/prometheus/client_golang/prometheus"

// metrics are the sink's Prometheus metrics; labels are bounded (table,
// fixed reason).
type metrics struct {
	rows       *prometheus.CounterVec
	files      *prometheus.CounterVec
	errors     *prometheus.CounterVec
	duplicates prometheus.Counter
	buffered   prometheus.Gauge
	pending    prometheus.Gauge
	lag        *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	l := prometheus.Labels{"sink": "parquet"}
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_sink_rows_total", Help: "Rows stored by the sink, by table.", ConstLabels: l,
		}, []string{"table"}),
		files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_sink_blocks_total", Help: "Blocks (inserts or files) stored by the sink, by table.", ConstLabels: l,
		}, []string{"table"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_sink_errors_total", Help: "Failed sink operations, by table and reason.", ConstLabels: l,
		}, []string{"table", "reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccflow_sink_duplicate_batches_total", Help: "Flow batches not stored again because the sink stored the same batch recently (redelivery).", ConstLabels: l,
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_sink_buffered_rows", Help: "Rows held in memory by the sink, not yet stored.", ConstLabels: l,
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_sink_pending_bytes", Help: "Bytes of Parquet files held in memory, open or waiting for the disk.", ConstLabels: l,
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ccflow_sink_lag_seconds", Help: "Age of the oldest row not yet stored, by table (0 when none).", ConstLabels: l,
		}, []string{"table"}),
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.duplicates, m.files, m.errors, m.buffered, m.pending, m.lag)
	}
	return m
}
