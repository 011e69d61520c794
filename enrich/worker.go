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
// The cache is 2-way set-associative, CacheSize entries of 24 bytes,
// indexed by a hash with a per-Enricher random seed (so remote addresses
// chosen by an attacker cannot be aimed at one set). Behind it, per-worker
// memos map MMDB record offsets to decoded, interned strings, so a miss
// decodes a record only the first time the worker meets it.
type Worker struct {
	e     *Enricher
	snap  *snapshot
	sets  []cacheSet
	shift uint

	asMemo map[uintptr]*asInfo
	ccMemo map[uintptr]string
	facts  map[factsKey]*facts

	lastExp     flow.Addr
	lastExpInfo *exporterInfo
	lastExpOK   bool

	errs uint64 // lookup errors since the last flush
}

type cacheSet [2]cacheEntry

// cacheEntry caches the facts of one remote address (as two words). The
// zero entry never matches: the zero address is not looked up.
type cacheEntry struct {
	lo, hi uint64
	f      *facts
}

// facts is what a remote address gets; one per distinct combination of
// AS record, country record and intel-list set, per worker.
type facts struct {
	asn      uint32
	org      string
	country  string
	provider string
	intel    string
}

type factsKey struct {
	as, cc uintptr
	intel  uint64
}

type asInfo struct {
	asn      uint32
	org      string
	provider string
}

// noRecord marks "not in the database" in a factsKey.
const noRecord = ^uintptr(0)

var noFacts = &facts{}

// NewWorker returns a Worker for one goroutine. Its cache memory
// (CacheSize × 24 bytes) is allocated here, once.
func (e *Enricher) NewWorker() *Worker {
	w := &Worker{e: e, shift: e.cacheShift}
	if e.cacheSets > 0 {
		w.sets = make([]cacheSet, e.cacheSets)
	}
	return w
}

// reset drops everything derived from an older snapshot.
func (w *Worker) reset(s *snapshot) {
	w.snap = s
	clear(w.sets)
	w.asMemo = map[uintptr]*asInfo{}
	w.ccMemo = map[uintptr]string{}
	w.facts = map[factsKey]*facts{}
}

// Enrich is Enricher.Enrich for this worker's goroutine; it allocates
// nothing once the cache is warm.
func (w *Worker) Enrich(flows []flow.Pseudo) {
	e := w.e
	snap := e.snap.Load()
	if snap != w.snap {
		w.reset(snap)
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
		var fc *facts
		switch {
		case lo == 0 && hi == 0:
			fc = noFacts
		case len(sets) > 0:
			lookups++
			h := (lo ^ e.seed0) * 0x9e3779b97f4a7c15
			h = (h ^ hi ^ e.seed1) * 0xbf58476d1ce4e5b9
			set := &sets[h>>w.shift]
			switch {
			case set[0].lo == lo && set[0].hi == hi:
				fc = set[0].f
				hits++
			case set[1].lo == lo && set[1].hi == hi:
				fc = set[1].f
				hits++
			default:
				fc = w.miss(snap, f.Remote)
				set[1] = set[0]
				set[0] = cacheEntry{lo: lo, hi: hi, f: fc}
			}
		default:
			lookups++
			fc = w.miss(snap, f.Remote)
		}
		f.RemoteASN = fc.asn
		f.RemoteASOrg = fc.org
		f.RemoteCountry = fc.country
		f.Provider = fc.provider
		f.Intel = fc.intel
		if fc.intel != "" {
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
func (w *Worker) miss(s *snapshot, a flow.Addr) *facts {
	ip := netip.AddrFrom16(a).Unmap()
	key := factsKey{as: noRecord, cc: noRecord}
	if s.asn != nil && (!s.asn4 || ip.Is4()) {
		res := s.asn.Lookup(ip)
		if err := res.Err(); err != nil {
			w.errs++
		} else if res.Found() {
			key.as = res.Offset()
		}
	}
	if s.country != nil && (!s.country4 || ip.Is4()) {
		res := s.country.Lookup(ip)
		if err := res.Err(); err != nil {
			w.errs++
		} else if res.Found() {
			key.cc = res.Offset()
		}
	}
	if s.intel != nil {
		key.intel = s.intel.lookup(ip)
	}
	if fc, ok := w.facts[key]; ok {
		return fc
	}
	if len(w.facts) >= w.e.memoLimit {
		clear(w.facts)
		clear(w.asMemo)
		clear(w.ccMemo)
	}
	fc := &facts{}
	if key.as != noRecord {
		ai := w.asMemo[key.as]
		if ai == nil {
			var r record
			if err := s.asn.LookupOffset(key.as).Decode(&r); err != nil {
				w.errs++
			}
			ai = &asInfo{asn: r.ASN, org: r.Org, provider: w.e.providers.class(r.ASN, r.Org)}
			w.asMemo[key.as] = ai
		}
		fc.asn, fc.org, fc.provider = ai.asn, ai.org, ai.provider
	}
	if key.cc != noRecord {
		cc, ok := w.ccMemo[key.cc]
		if !ok {
			var r record
			if err := s.country.LookupOffset(key.cc).Decode(&r); err != nil {
				w.errs++
			}
			cc = r.Country
			w.ccMemo[key.cc] = cc
		}
		fc.country = cc
	}
	if key.intel != 0 {
		fc.intel = s.intel.names[key.intel]
	}
	w.facts[key] = fc
	return fc
}
