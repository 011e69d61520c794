package enrich

import (
	"encoding/binary"
	"net/netip"

	"github.com/ccflow/ccflow/flow"
)

// Worker is a per-goroutine enrichment handle with its own bounded cache
// of remote addresses. A Worker is not goroutine-safe: give each collector
// worker goroutine its own (Enricher.NewWorker), or call Enricher.Enrich,
// which pools Workers. A Worker sees a reload at its next Enrich call.
//
// The cache is 2-way set-associative, CacheSize entries of 40 bytes,
// indexed by a multiplicative hash with a per-Enricher random seed (so
// remote addresses chosen by an attacker cannot be aimed at one set). An
// entry points at the snapshot's decoded, shared values, so a hit copies
// five words and a miss (two MMDB lookups and one trie lookup) decodes and
// allocates nothing.
type Worker struct {
	e     *Enricher
	snap  *snapshot
	sets  []cacheSet
	shift uint

	lastExp     flow.Addr
	lastExpInfo *exporterInfo
	lastExpOK   bool

	errs uint64 // lookup errors since the last flush
}

type cacheSet [2]cacheEntry

// cacheEntry holds the enrichment of one remote address (lo, hi: its 16
// bytes). The zero entry never matches: the zero address is not looked up.
// The pointers are never nil.
type cacheEntry struct {
	lo, hi uint64
	as     *asInfo
	cc     *string
	intel  *string
}

var (
	noAS    = &asInfo{}
	noValue = new(string)
)

// NewWorker returns a Worker for one goroutine. Its cache memory
// (CacheSize × 40 bytes) is allocated here, once.
func (e *Enricher) NewWorker() *Worker {
	w := &Worker{e: e, shift: e.cacheShift}
	if e.cacheSets > 0 {
		w.sets = make([]cacheSet, e.cacheSets)
	}
	return w
}

// Enrich is Enricher.Enrich for this worker's goroutine; it allocates
// nothing.
func (w *Worker) Enrich(flows []flow.Pseudo) {
	e := w.e
	snap := e.snap.Load()
	if snap != w.snap {
		w.snap = snap
		clear(w.sets)
	}
	var lookups, hits, intel uint64
	names := len(e.exporters) > 0
	sets := w.sets
	for i := range flows {
		f := &flows[i]
		if names {
			w.names(f)
		} else {
			f.ExporterName, f.InIfName, f.OutIfName = "", "", ""
		}
		lo := binary.LittleEndian.Uint64(f.Remote[:8])
		hi := binary.LittleEndian.Uint64(f.Remote[8:])
		if lo == 0 && hi == 0 {
			f.RemoteASN, f.RemoteASOrg, f.RemoteCountry, f.Provider, f.Intel = 0, "", "", "", ""
			continue
		}
		lookups++
		var ce *cacheEntry
		var tmp cacheEntry
		if len(sets) > 0 {
			h := (lo ^ e.seed0) * 0x9e3779b97f4a7c15
			h = (h ^ hi ^ e.seed1) * 0xbf58476d1ce4e5b9
			set := &sets[h>>w.shift]
			switch {
			case set[0].lo == lo && set[0].hi == hi:
				ce = &set[0]
				hits++
			case set[1].lo == lo && set[1].hi == hi:
				ce = &set[1]
				hits++
			default:
				set[1] = set[0]
				set[0] = w.miss(snap, f.Remote, lo, hi)
				ce = &set[0]
			}
		} else {
			tmp = w.miss(snap, f.Remote, lo, hi)
			ce = &tmp
		}
		f.RemoteASN = ce.as.asn
		f.RemoteASOrg = ce.as.org
		f.Provider = ce.as.provider
		f.RemoteCountry = *ce.cc
		f.Intel = *ce.intel
		if len(f.Intel) > 0 {
			intel++
		}
	}
	m := e.m
	m.flows.Add(float64(len(flows)))
	if lookups > 0 {
		m.lookups.Add(float64(lookups))
		m.hits.Add(float64(hits))
		m.misses.Add(float64(lookups - hits))
	}
	if intel > 0 {
		m.intel.Add(float64(intel))
	}
	if w.errs > 0 {
		m.lookupErrors.Add(float64(w.errs))
		w.errs = 0
	}
}

// names fills the exporter and interface names.
func (w *Worker) names(f *flow.Pseudo) {
	if !w.lastExpOK || f.Exporter != w.lastExp {
		w.lastExp, w.lastExpInfo, w.lastExpOK = f.Exporter, w.e.exporters[f.Exporter], true
	}
	x := w.lastExpInfo
	if x == nil {
		f.ExporterName, f.InIfName, f.OutIfName = "", "", ""
		return
	}
	f.ExporterName = x.name
	f.InIfName = x.ifNames[f.InIf]
	f.OutIfName = x.ifNames[f.OutIf]
}

// miss looks a remote address up in the snapshot's sources.
func (w *Worker) miss(s *snapshot, a flow.Addr, lo, hi uint64) cacheEntry {
	ce := cacheEntry{lo: lo, hi: hi, as: noAS, cc: noValue, intel: noValue}
	ip := netip.AddrFrom16(a).Unmap()
	if d := s.asn; d != nil && (ip.Is4() || !d.v4only) {
		if off, ok := w.lookup(d, ip); ok {
			if ai := d.as[off]; ai != nil {
				ce.as = ai
			} else {
				ce.as = w.decodeAS(d, off)
			}
		}
	}
	if d := s.country; d != nil && (ip.Is4() || !d.v4only) {
		if off, ok := w.lookup(d, ip); ok {
			if cc := d.cc[off]; cc != nil {
				ce.cc = cc
			} else {
				ce.cc = w.decodeCountry(d, off)
			}
		}
	}
	if s.intel != nil {
		ce.intel = s.intel.lookup(ip)
	}
	return ce
}

// lookup returns the data offset of ip's record, if any.
func (w *Worker) lookup(d *mmdbData, ip netip.Addr) (uintptr, bool) {
	res := d.r.Lookup(ip)
	if err := res.Err(); err != nil {
		w.errs++
		return 0, false
	}
	if !res.Found() {
		return 0, false
	}
	return res.Offset(), true
}

// decodeAS and decodeCountry handle a record that the load-time walk did
// not see (it sees every record a lookup can reach, so this is a
// safeguard); they allocate.
func (w *Worker) decodeAS(d *mmdbData, off uintptr) *asInfo {
	var r record
	if err := d.r.LookupOffset(off).Decode(&r); err != nil {
		w.errs++
		return noAS
	}
	return &asInfo{asn: r.ASN, org: r.Org, provider: w.e.providers.class(r.ASN, r.Org)}
}

func (w *Worker) decodeCountry(d *mmdbData, off uintptr) *string {
	var r record
	if err := d.r.LookupOffset(off).Decode(&r); err != nil {
		w.errs++
		return noValue
	}
	return &r.Country
}
