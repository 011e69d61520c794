package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
)

// metrics are the collector's Prometheus metrics. Labels are bounded: the
// exporter (router) address, limited by max_exporters, with "other" for
// sources beyond the limit or outside the allowlist; the export protocol; the
// listener; and a fixed set of reasons. No flow address or port is ever a
// label.
type metrics struct {
	datagrams      *prometheus.CounterVec
	flows          *prometheus.CounterVec
	decodeErrors   *prometheus.CounterVec
	templates      *prometheus.GaugeVec
	templateMisses *prometheus.CounterVec
	pendingSets    *prometheus.CounterVec
	counterSamples *prometheus.CounterVec
	socketDrops    *prometheus.CounterVec
	receiveBuffer  *prometheus.GaugeVec
	exporters      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "ccflow", "collector"
	m := &metrics{
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "datagrams_total",
			Help: "Datagrams received, by exporter and export protocol.",
		}, []string{"exporter", "protocol"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "flows_total",
			Help: "Flow records decoded and handed on, by exporter and export protocol.",
		}, []string{"exporter", "protocol"}),
		decodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "decode_errors_total",
			Help: "Datagrams with a decoding problem or refused, by exporter, export protocol and reason (the first problem of each datagram).",
		}, []string{"exporter", "protocol", "reason"}),
		templates: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "templates",
			Help: "NetFlow v9/IPFIX templates and options templates held, by exporter.",
		}, []string{"exporter"}),
		templateMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "template_misses_total",
			Help: "NetFlow v9/IPFIX data sets that arrived before their template, by exporter.",
		}, []string{"exporter"}),
		pendingSets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "pending_sets_total",
			Help: "Data sets that waited for their template, by exporter and outcome (released: decoded when the template came; dropped: buffer off, full or too old).",
		}, []string{"exporter", "outcome"}),
		counterSamples: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "sflow_stats_samples_total",
			Help: "sFlow counter samples (interface statistics) received, counted but not decoded, by exporter.",
		}, []string{"exporter"}),
		socketDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "socket_drops_total",
			Help: "Datagrams the kernel dropped because a socket's receive buffer was full (SO_RXQ_OVFL), by listener.",
		}, []string{"listener"}),
		receiveBuffer: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "receive_buffer_bytes",
			Help: "Effective socket receive buffer as reported by the kernel, by listener.",
		}, []string{"listener"}),
		exporters: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "exporters",
			Help: "Exporters with state in the collector.",
		}),
	}
	for _, c := range []prometheus.Collector{m.datagrams, m.flows, m.decodeErrors, m.templates, m.templateMisses,
		m.pendingSets, m.counterSamples, m.socketDrops, m.receiveBuffer, m.exporters} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// exporterMetrics are one exporter's counters, resolved once so that the
// per-datagram path does no label lookups.
type exporterMetrics struct {
	datagrams [numProtocols]prometheus.Counter
	flows     [numProtocols]prometheus.Counter
	errors    map[errKey]prometheus.Counter
	templates prometheus.Gauge
	misses    prometheus.Counter
	released  prometheus.Counter
	dropped   prometheus.Counter
	counters  prometheus.Counter
}

// numProtocols is one more than the largest export protocol decoded here.
const numProtocols = int(flow.ProtocolSFlow5) + 1

type errKey struct {
	protocol flow.Protocol
	reason   string
}

func (m *metrics) forExporter(label string) *exporterMetrics {
	em := &exporterMetrics{
		errors:    map[errKey]prometheus.Counter{},
		templates: m.templates.WithLabelValues(label),
		misses:    m.templateMisses.WithLabelValues(label),
		released:  m.pendingSets.WithLabelValues(label, "released"),
		dropped:   m.pendingSets.WithLabelValues(label, "dropped"),
		counters:  m.counterSamples.WithLabelValues(label),
	}
	for p := flow.ProtocolNetFlow5; p <= flow.ProtocolSFlow5; p++ {
		em.datagrams[p] = m.datagrams.WithLabelValues(label, p.String())
		em.flows[p] = m.flows.WithLabelValues(label, p.String())
	}
	return em
}

// decodeError returns the counter for one (protocol, reason); the caller
// holds the exporter's lock.
func (m *metrics) decodeError(em *exporterMetrics, label string, p flow.Protocol, reason string) prometheus.Counter {
	k := errKey{p, reason}
	c := em.errors[k]
	if c == nil {
		c = m.decodeErrors.WithLabelValues(label, p.String(), reason)
		em.errors[k] = c
	}
	return c
}
