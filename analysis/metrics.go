package analysis

import "github.com/prometheus/client_golang/prometheus"

// metrics are the stage's metrics; labels are bounded.
type metrics struct {
	batches        *prometheus.CounterVec
	flows          prometheus.Counter
	candidates     *prometheus.CounterVec
	checkpoints    *prometheus.CounterVec
	checkpointSecs prometheus.Histogram
	checkpointSize prometheus.Gauge
	pending        prometheus.Gauge
	lastCheckpoint prometheus.Gauge
	sinkErrors     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "batches_total",
			Help: "Batches consumed from the bus, by result (observed, duplicate).",
		}, []string{"result"}),
		flows: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "flows_total",
			Help: "Flows fed to the detector.",
		}),
		candidates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "candidates_total",
			Help: "Candidates produced, by state (reported, suppressed).",
		}, []string{"state"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "checkpoints_total",
			Help: "Detector checkpoints, by result (ok, error, restored, restore_error).",
		}, []string{"result"}),
		checkpointSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "checkpoint_duration_seconds",
			Help:    "Time to checkpoint the detector, sync the sink and commit offsets.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 9),
		}),
		checkpointSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "checkpoint_bytes",
			Help: "Size of the last detector checkpoint.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "uncommitted_batches",
			Help: "Batches consumed but not yet committed to the bus (waiting for a checkpoint).",
		}),
		lastCheckpoint: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "last_checkpoint_timestamp_seconds",
			Help: "Unix time of the last successful checkpoint.",
		}),
		sinkErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ccflow", Subsystem: "analysis", Name: "sink_errors_total",
			Help: "Sink writes that failed, by table (the batch is retried from the bus after a restart).",
		}, []string{"table"}),
	}
	if reg != nil {
		reg.MustRegister(m.batches, m.flows, m.candidates, m.checkpoints, m.checkpointSecs, m.checkpointSize, m.pending, m.lastCheckpoint, m.sinkErrors)
	}
	return m
}
