package collector

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"

	"github.com/ccflow/ccflow/collector/netflow"
	"github.com/ccflow/ccflow/collector/netflow5"
	"github.com/ccflow/ccflow/collector/sflow"
	"github.com/ccflow/ccflow/flow"
)

// Reasons for refused datagrams (decode errors have the decoders' reasons).
const (
	reasonNotAllowed    = "not_allowed"
	reasonExporterLimit = "exporter_limit"
	reasonOversized     = "oversized"
	reasonShort         = "truncated"
	reasonVersion       = "bad_version"
)

// flushRecords bounds the records a worker holds before calling the
// handler: a batch of datagrams full of tiny records cannot grow it further.
const flushRecords = 8192

// worker reads one socket and decodes its datagrams. Its buffers are reused
// for every batch.
type worker struct {
	c     *Collector
	s     *socket
	msgs  []ipv4.Message
	cache map[netip.Addr]*exporter
	out   []flow.Record

	v5h   netflow5.Header
	v5    []netflow5.Record
	nf    []netflow.Record
	sfd   sflow.Datagram
	sf    []sflow.FlowSample
	drops uint32
	dropC prometheus.Counter
}

func newWorker(c *Collector, s *socket) *worker {
	w := &worker{c: c, s: s, cache: map[netip.Addr]*exporter{}, dropC: c.m.socketDrops.WithLabelValues(s.spec.key)}
	w.msgs = make([]ipv4.Message, s.spec.cfg.ReadBatch)
	for i := range w.msgs {
		w.msgs[i].Buffers = [][]byte{make([]byte, s.spec.cfg.MaxDatagram)}
		if oobSize > 0 {
			w.msgs[i].OOB = make([]byte, oobSize)
		}
	}
	return w
}

// run reads batches until the socket is closed.
func (w *worker) run() {
	for {
		n, err := w.s.batch.ReadBatch(w.msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if ok, _ := w.c.errs.allow(time.Now()); ok {
				w.c.log.Warn("read failed", "listener", w.s.spec.key, "err", err)
			}
			continue
		}
		now := time.Now().UnixMilli()
		for i := range w.msgs[:n] {
			m := &w.msgs[i]
			if m.NN > 0 {
				w.kernelDrops(m.OOB[:m.NN])
			}
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			src, _ := netip.AddrFromSlice(ua.IP)
			w.datagram(m.Buffers[0][:m.N], src.Unmap(), m.Flags&msgTrunc != 0, now)
			if len(w.out) >= flushRecords {
				w.flush()
			}
		}
		w.flush()
	}
}

// flush hands the decoded records to the handler.
func (w *worker) flush() {
	if len(w.out) > 0 {
		w.c.h.HandleFlows(w.s.id, w.out)
		w.out = w.out[:0]
	}
}

// kernelDrops counts the socket's drops reported by SO_RXQ_OVFL (a
// running total per socket).
func (w *worker) kernelDrops(oob []byte) {
	d, ok := socketDrops(oob)
	if !ok || d == w.drops {
		return
	}
	w.dropC.Add(float64(d - w.drops))
	w.drops = d
}

// exporter returns the state for src (nil beyond max_exporters).
func (w *worker) exporter(src netip.Addr) *exporter {
	if e := w.cache[src]; e != nil {
		return e
	}
	e := w.c.exp.get(src)
	if e != nil {
		w.cache[src] = e
	}
	return e
}

func (w *worker) allowed(src netip.Addr) bool {
	if len(w.c.allow) == 0 {
		return true
	}
	for _, p := range w.c.allow {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// protocolOf tells the export protocol from a datagram's version field.
func protocolOf(b []byte) flow.Protocol {
	if len(b) < 2 {
		return flow.ProtocolUnknown
	}
	switch binary.BigEndian.Uint16(b) {
	case 5:
		return flow.ProtocolNetFlow5
	case 9:
		return flow.ProtocolNetFlow9
	case 10:
		return flow.ProtocolIPFIX
	case 0:
		if len(b) >= 4 && binary.BigEndian.Uint32(b) == 5 {
			return flow.ProtocolSFlow5
		}
	}
	return flow.ProtocolUnknown
}

// datagram decodes one datagram and appends its records to w.out.
func (w *worker) datagram(b []byte, src netip.Addr, truncated bool, nowMs int64) {
	p := protocolOf(b)
	label := p
	if p == flow.ProtocolUnknown {
		label = w.s.spec.fallback
	}
	if !w.allowed(src) {
		w.fail(w.c.exp.other, label, reasonNotAllowed)
		return
	}
	e := w.exporter(src)
	if e == nil {
		w.fail(w.c.exp.other, label, reasonExporterLimit)
		return
	}
	if p == flow.ProtocolUnknown {
		reason := reasonVersion
		if len(b) < 4 {
			reason = reasonShort
		}
		e.m.datagrams[label].Inc()
		w.fail(e, label, reason)
		return
	}
	e.m.datagrams[p].Inc()
	if truncated {
		w.fail(e, p, reasonOversized)
		return
	}
	n0 := len(w.out)
	var err error
	switch p {
	case flow.ProtocolNetFlow5:
		w.v5, err = netflow5.Decode(b, &w.v5h, w.v5[:0])
		for i := range w.v5 {
			w.out = append(w.out, flow.Record{})
			normV5(&w.out[len(w.out)-1], &w.v5h, &w.v5[i], e.addr, nowMs)
		}
		e.m.flows[p].Add(float64(len(w.v5)))
	case flow.ProtocolNetFlow9, flow.ProtocolIPFIX:
		w.nf, err = e.decodeNetFlow(w.c.exp.lim, b, nowMs, w.nf[:0])
		for i := range w.nf {
			w.out = append(w.out, flow.Record{})
			normNetFlow(&w.out[len(w.out)-1], &w.nf[i], e.addr)
		}
		// Records released from the pending buffer have the version of
		// their own datagram; count each under its protocol.
		var v9, v10 int
		for i := range w.out[n0:] {
			if w.out[n0+i].Protocol == flow.ProtocolNetFlow9 {
				v9++
			} else {
				v10++
			}
		}
		if v9 > 0 {
			e.m.flows[flow.ProtocolNetFlow9].Add(float64(v9))
		}
		if v10 > 0 {
			e.m.flows[flow.ProtocolIPFIX].Add(float64(v10))
		}
	case flow.ProtocolSFlow5:
		w.sf, err = sflow.Decode(b, &w.sfd, w.sf[:0])
		for i := range w.sf {
			w.out = append(w.out, flow.Record{})
			normSFlow(&w.out[len(w.out)-1], &w.sfd, &w.sf[i], nowMs)
		}
		e.m.flows[p].Add(float64(len(w.sf)))
		if w.sfd.CounterSamples > 0 {
			e.m.counters.Add(float64(w.sfd.CounterSamples))
		}
	}
	if err != nil {
		w.fail(e, p, reasonOf(err))
	}
}

// reasonOf returns the metric label of a decoding error.
func reasonOf(err error) string {
	if r, ok := err.(interface{ Reason() string }); ok {
		return r.Reason()
	}
	return "other"
}

// fail counts a decoding problem and logs it at a bounded rate. The log
// line names the exporter (a router), never a flow address.
func (w *worker) fail(e *exporter, p flow.Protocol, reason string) {
	e.mu.Lock()
	c := w.c.m.decodeError(e.m, e.label, p, reason)
	e.mu.Unlock()
	c.Inc()
	if ok, suppressed := w.c.errs.allow(time.Now()); ok {
		w.c.log.Warn("decode error", "exporter", e.label, "protocol", p.String(), "reason", reason, "suppressed", suppressed)
	}
}
