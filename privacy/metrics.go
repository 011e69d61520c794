package privacy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
)

// Drop reasons: the values of the reason label of
// ccflow_privacy_flows_dropped_total.
const (
	reasonTransit = iota
	reasonBeforeOrigin
	reasonDestroyed
	reasonFuture
	reasonNoKey
	numReasons
)

var reasonNames = [numReasons]string{"transit", "before_origin", "destroyed_epoch", "future_epoch", "no_key"}

// metrics are the stage's Prometheus metrics. Labels are bounded (kind,
// reason, family); never an address, port or pseudonym.
type metrics struct {
	flows       [4]prometheus.Counter // by flow.Kind
	dropped     [numReasons]prometheus.Counter
	exporters   prometheus.Counter
	keysCreated prometheus.Counter
	keysLoaded  prometheus.Gauge
}

// counts accumulate one Pseudonymize call's counters so that the shared
// Prometheus counters are touched once per batch, not once per flow.
type counts struct {
	kind      [4]uint64
	drop      [numReasons]uint64
	exporters uint64
}

func newMetrics(reg prometheus.Registerer, subs *Subscribers, red *Redactor) (*metrics, error) {
	m := &metrics{}
	flows := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ccflow", Subsystem: "privacy", Name: "flows_total",
		Help: "Flows that left the privacy stage pseudonymized, by kind (subscriber, both, transit).",
	}, []string{"kind"})
	for _, k := range []flow.Kind{flow.KindSubscriber, flow.KindBoth, flow.KindTransit} {
		m.flows[k] = flows.WithLabelValues(k.String())
	}
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "ccflow", Subsystem: "privacy", Name: "flows_dropped_total",
		Help: "Flows dropped by the privacy stage, by reason (transit policy, time before the key origin, destroyed epoch, epoch too far in the future, no key).",
	}, []string{"reason"})
	for i, r := range reasonNames {
		m.dropped[i] = dropped.WithLabelValues(r)
	}
	m.exporters = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ccflow", Subsystem: "privacy", Name: "exporters_redacted_total",
		Help: "Flows whose exporter address was a subscriber address and was removed.",
	})
	m.keysCreated = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ccflow", Subsystem: "privacy", Name: "keys_created_total",
		Help: "Epoch keys this process created.",
	})
	m.keysLoaded = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ccflow", Subsystem: "privacy", Name: "key_epochs",
		Help: "Epoch keys held in memory.",
	})
	prefixes := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "ccflow", Subsystem: "privacy", Name: "subscriber_prefixes",
		Help: "Subscriber prefixes loaded, by address family.",
	}, []string{"family"})
	prefixes.WithLabelValues("ipv4").Set(float64(subs.Len4()))
	prefixes.WithLabelValues("ipv6").Set(float64(subs.Len6()))
	redacted := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "ccflow", Subsystem: "privacy", Name: "log_values_redacted_total",
		Help: "Log attribute values in which the redaction backstop found and removed a subscriber address.",
	}, func() float64 { return float64(red.Redacted()) })
	if reg != nil {
		for _, c := range []prometheus.Collector{flows, dropped, m.exporters, m.keysCreated, m.keysLoaded, prefixes, redacted} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register privacy metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) add(c *counts) {
	for k, n := range c.kind {
		if n > 0 {
			m.flows[k].Add(float64(n))
		}
	}
	for r, n := range c.drop {
		if n > 0 {
			m.dropped[r].Add(float64(n))
		}
	}
	if c.exporters > 0 {
		m.exporters.Add(float64(c.exporters))
	}
}
