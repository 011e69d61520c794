// Package lag computes a sink's ccflow_sink_lag_seconds gauge: per table,
// the age of the oldest row the sink accepted but has not stored yet (rows
// still buffered, queued, or spilled while the destination is down). Both
// sinks report it the same way, so one alert rule covers either.
package lag

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Oldest collects, per table, the creation time of the oldest unstored
// row. The zero value is not usable; make one with New.
type Oldest map[string]time.Time

// New returns an empty Oldest.
func New() Oldest { return Oldest{} }

// See records that table holds unstored rows created at created.
func (o Oldest) See(table string, created time.Time) {
	if c, ok := o[table]; !ok || created.Before(c) {
		o[table] = created
	}
}

// Report sets g{table} to the age at now of each table's oldest unstored
// row, and to 0 for the tables with nothing pending, so that a gauge does
// not keep the lag of an outage that is over.
func (o Oldest) Report(g *prometheus.GaugeVec, now time.Time, tables ...string) {
	for _, t := range tables {
		age := 0.0
		if c, ok := o[t]; ok {
			age = now.Sub(c).Seconds()
		}
		g.WithLabelValues(t).Set(age)
	}
}
