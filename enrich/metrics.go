package enrich

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the enrichment stage's Prometheus metrics. The source label
// takes the values asn_db, country_db and intel/<list name>, all fixed by
// the configuration.
type metrics struct {
	flows        prometheus.Counter
	lookups      prometheus.Counter
	hits         prometheus.Counter
	misses       prometheus.Counter
	intel        prometheus.Counter
	reloads      *prometheus.CounterVec
	reloadErrors *prometheus.CounterVec
	entries      *prometheus.GaugeVec
	loadTime     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "ccflow", "enrich"
	m := &metrics{
		flows: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "flows_total",
			Help: "Flows enriched."}),
		lookups: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lookups_total",
			Help: "Remote-address lookups (flows with a remote address)."}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_hits_total",
			Help: "Remote-address lookups answered by a worker cache."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_misses_total",
			Help: "Remote-address lookups that went to the sources."}),
		intel: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "intel_matches_total",
			Help: "Flows whose remote address is on at least one intel list."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reloads_total",
			Help: "Successful loads of a source, the first one included."}, []string{"source"}),
		reloadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reload_errors_total",
			Help: "Failed reloads of a source; the previous data stays in use."}, []string{"source"}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "source_entries",
			Help: "Entries in a loaded source: prefixes of an intel list, networks of an MMDB file."}, []string{"source"}),
		loadTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "source_load_timestamp_seconds",
			Help: "Unix time at which the data in use for a source was loaded."}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.flows, m.lookups, m.hits, m.misses, m.intel,
			m.reloads, m.reloadErrors, m.entries, m.loadTime)
	}
	return m
}
