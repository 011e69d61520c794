package collector

import (
	"net/netip"
	"sync"

	"github.com/ccflow/ccflow/collector/netflow"
	"github.com/ccflow/ccflow/flow"
)

// exporter is the state the collector keeps per source address.
type exporter struct {
	addr  flow.Addr
	label string
	m     *exporterMetrics

	// mu guards the session, last and the error counters.
	mu      sync.Mutex
	session *netflow.Session
	last    netflow.Stats
}

// exporterTable holds the exporters, bounded by max; other stands for
// sources beyond the bound or outside the allowlist (counts only).
type exporterTable struct {
	mu      sync.RWMutex
	m       map[netip.Addr]*exporter
	max     int
	lim     netflow.Limits
	metrics *metrics
	other   *exporter
}

func newExporterTable(max int, lim netflow.Limits, m *metrics) *exporterTable {
	t := &exporterTable{m: map[netip.Addr]*exporter{}, max: max, lim: lim, metrics: m}
	t.other = &exporter{label: "other", m: m.forExporter("other")}
	return t
}

// get returns the exporter for a, creating it unless the table is full
// (then it returns nil).
func (t *exporterTable) get(a netip.Addr) *exporter {
	t.mu.RLock()
	e := t.m[a]
	t.mu.RUnlock()
	if e != nil {
		return e
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if e = t.m[a]; e != nil {
		return e
	}
	if len(t.m) >= t.max {
		return nil
	}
	label := a.String()
	e = &exporter{addr: flow.AddrFrom(a), label: label, m: t.metrics.forExporter(label)}
	t.m[a] = e
	t.metrics.exporters.Set(float64(len(t.m)))
	return e
}

// decodeNetFlow decodes a NetFlow v9/IPFIX datagram with the exporter's
// session and updates the template metrics.
func (e *exporter) decodeNetFlow(lim netflow.Limits, b []byte, nowMs int64, out []netflow.Record) ([]netflow.Record, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.session == nil {
		e.session = netflow.NewSession(lim)
	}
	out, err := e.session.Decode(b, nowMs, out)
	st := e.session.Stats()
	if st.Templates != e.last.Templates {
		e.m.templates.Set(float64(st.Templates))
	}
	if d := st.Misses - e.last.Misses; d > 0 {
		e.m.misses.Add(float64(d))
	}
	if d := st.Released - e.last.Released; d > 0 {
		e.m.released.Add(float64(d))
	}
	if d := st.Dropped - e.last.Dropped; d > 0 {
		e.m.dropped.Add(float64(d))
	}
	e.last = st
	return out, err
}
