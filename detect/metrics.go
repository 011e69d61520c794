package detect

import "github.com/prometheus/client_golang/prometheus"

// metrics are the detector's Prometheus metrics. Labels are bounded: a
// fixed set of reasons and states, never an address or pseudonym.
type metrics struct {
	flows       *prometheus.CounterVec
	pairs       prometheus.Gauge
	bytes       prometheus.Gauge
	endpoints   prometheus.Gauge
	evictions   prometheus.Counter
	windows     prometheus.Counter
	candidates  *prometheus.CounterVec
	evalSeconds prometheus.Histogram
	watermark   prometheus.Gauge
}

// Flow results, the values of the "result" label.
const (
	resultObserved     = "observed"
	resultContinuation = "continuation"
	resultIgnored      = "ignored"
	resultLate         = "late"
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_detect_flows_total",
			Help: "Flows seen by the detector, by result: observed (a connection start), continuation (a further record of a connection already seen), ignored (not an outbound subscriber flow), late (behind the watermark).",
		}, []string{"result"}),
		pairs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_detect_tracked_pairs",
			Help: "(Subscriber, remote endpoint) pairs the detector tracks.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_detect_tracked_bytes",
			Help: "Estimated memory of the detector state (pairs, samples, subscribers, endpoints, sketches and index).",
		}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_detect_tracked_endpoints",
			Help: "Remote endpoints the detector tracks.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccflow_detect_evictions_total",
			Help: "Pairs evicted to stay within max_pairs or max_bytes.",
		}),
		windows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccflow_detect_windows_total",
			Help: "Detection windows evaluated.",
		}),
		candidates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccflow_detect_candidates_total",
			Help: "Candidates produced, by state: reported, or suppressed by an allowlist.",
		}, []string{"state"}),
		evalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ccflow_detect_evaluation_duration_seconds",
			Help:    "Time to evaluate one window.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		watermark: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccflow_detect_watermark_seconds",
			Help: "Event-time watermark (newest flow start minus allowed lateness), Unix seconds.",
		}),
	}
	for _, c := range []prometheus.Collector{m.flows, m.pairs, m.bytes, m.endpoints, m.evictions, m.windows, m.candidates, m.evalSeconds, m.watermark} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
