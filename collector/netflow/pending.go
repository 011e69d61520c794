package netflow

// pendingSet is a data set buffered until its template arrives.
type pendingSet struct {
	key       tkey
	exportSec uint32
	sysUptime uint32
	recvMs    int64
	off, n    int
}

// pending is the bounded buffer of data sets without a template: one byte
// arena (allocated on first use) and the sets in arrival order.
type pending struct {
	buf  []byte
	used int
	sets []pendingSet
}

// buffer keeps a copy of a data set whose template is unknown, dropping the
// oldest sets when the buffer is full.
func (s *Session) buffer(ctx *Record, id uint16, body []byte, nowMs int64) {
	p := &s.pending
	if s.lim.PendingBytes <= 0 || s.lim.PendingSets <= 0 || len(body) > s.lim.PendingBytes {
		s.stats.Dropped++
		return
	}
	s.dropOld(nowMs)
	drop := 0
	for drop < len(p.sets) && (p.used-p.freed(drop)+len(body) > s.lim.PendingBytes || len(p.sets)-drop >= s.lim.PendingSets) {
		drop++
	}
	if drop > 0 {
		s.stats.Dropped += uint64(drop)
		p.keep(func(i int, _ *pendingSet) bool { return i >= drop })
	}
	if p.buf == nil {
		p.buf = make([]byte, s.lim.PendingBytes)
	}
	copy(p.buf[p.used:], body)
	p.sets = append(p.sets, pendingSet{
		key:       tkey{version: ctx.Version, id: id, domain: ctx.Domain},
		exportSec: ctx.ExportSec,
		sysUptime: ctx.SysUptime,
		recvMs:    ctx.ReceivedMs,
		off:       p.used,
		n:         len(body),
	})
	p.used += len(body)
}

// freed returns the bytes held by the first n sets.
func (p *pending) freed(n int) int {
	f := 0
	for _, ps := range p.sets[:n] {
		f += ps.n
	}
	return f
}

// keep retains the sets for which ok is true and compacts the arena.
func (p *pending) keep(ok func(i int, ps *pendingSet) bool) {
	j, used := 0, 0
	for i := range p.sets {
		ps := p.sets[i]
		if !ok(i, &ps) {
			continue
		}
		copy(p.buf[used:], p.buf[ps.off:ps.off+ps.n])
		ps.off = used
		used += ps.n
		p.sets[j] = ps
		j++
	}
	p.sets = p.sets[:j]
	p.used = used
}

// dropOld drops buffered sets older than PendingAge.
func (s *Session) dropOld(nowMs int64) {
	p := &s.pending
	age := s.lim.PendingAge.Milliseconds()
	if age <= 0 || len(p.sets) == 0 || nowMs-p.sets[0].recvMs <= age {
		return
	}
	p.keep(func(_ int, ps *pendingSet) bool {
		if nowMs-ps.recvMs > age {
			s.stats.Dropped++
			return false
		}
		return true
	})
}

// release decodes the buffered sets whose template is now known.
func (s *Session) release(nowMs int64, out []Record) []Record {
	s.dropOld(nowMs)
	p := &s.pending
	p.keep(func(_ int, ps *pendingSet) bool {
		t := s.lookup(ps.key, nowMs)
		if t == nil {
			return true
		}
		ctx := Record{
			Version:    ps.key.version,
			Domain:     ps.key.domain,
			ExportSec:  ps.exportSec,
			SysUptime:  ps.sysUptime,
			ReceivedMs: ps.recvMs,
		}
		out = s.decodeSet(t, &ctx, p.buf[ps.off:ps.off+ps.n], out)
		s.stats.Released++
		return false
	})
	return out
}
