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
// The cache is 4-way set-associative with first-in-first-out replacement,
// CacheSize entries of 40 bytes, indexed by a multiplicative hash with a
// per-Enricher random seed (so remote addresses chosen by an attacker cannot
// be aimed at one set). An entry points at the snapshot's decoded, shared
// values, so a hit copies a few words and a miss (three lookups in bart
// tables) decodes and allocates nothing.
type Worker struct {
	e     *Enricher
	snap  *snapshot
	sets  []cacheSet
	shift uint

	lastExp     flow.Addr
	lastExpInfo *exporterInfo
	lastExpOK   bool
}

// cacheWays is the associativity of the cache.
const cacheWays = 4

// cacheSet is one set of the cache: the keys (the 16 bytes of a remote
// address as two words) fill one 64-byte CPU cache line, so a lookup
// compares the four ways without touching the values. The zero key never
// matches: the zero address is not looked up.
type cacheSet struct {
	key [cacheWays][2]uint64
	val [cacheWays]cacheVal
}

// cacheVal is the enrichment of one remote address: pointers into the
// snapshot's shared values, never nil.
type cacheVal struct {
	as    *asInfo
	cc    *string
	intel *string
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
	hasAS, hasCC, hasIntel := snap.asn != nil, snap.country != nil, snap.intel != nil
	remote := hasAS || hasCC || hasIntel
	sets := w.sets
	for i := range flows {
		f := &flows[i]
		if names {
			w.names(f)
		}
		if !remote {
			continue
		}
		lo := binary.LittleEndian.Uint64(f.Remote[:8])
		hi := binary.LittleEndian.Uint64(f.Remote[8:])
		if lo == 0 && hi == 0 {
			if hasAS {
				f.RemoteASN, f.RemoteASOrg, f.Provider = 0, "", ""
			}
			if hasCC {
				f.RemoteCountry = ""
			}
			if hasIntel {
				f.Intel = ""
			}
			continue
		}
		lookups++
		var v cacheVal
		if len(sets) > 0 {
			h := (lo ^ e.seed0) * 0x9e3779b97f4a7c15
			h = (h ^ hi ^ e.seed1) * 0xbf58476d1ce4e5b9
			set := &sets[h>>w.shift]
			switch {
			case set.key[0] == [2]uint64{lo, hi}:
				v = set.val[0]
			case set.key[1] == [2]uint64{lo, hi}:
				v = set.val[1]
			case set.key[2] == [2]uint64{lo, hi}:
				v = set.val[2]
			case set.key[3] == [2]uint64{lo, hi}:
				v = set.val[3]
			default:
				v = w.miss(snap, f.Remote)
				copy(set.key[1:], set.key[:cacheWays-1])
				copy(set.val[1:], set.val[:cacheWays-1])
				set.key[0], set.val[0] = [2]uint64{lo, hi}, v
				hits--
			}
			hits++
		} else {
			v = w.miss(snap, f.Remote)
		}
		if hasAS {
			f.RemoteASN, f.RemoteASOrg, f.Provider = v.as.asn, v.as.org, v.as.provider
		}
		if hasCC {
			f.RemoteCountry = *v.cc
		}
		if hasIntel {
			f.Intel = *v.intel
			if len(f.Intel) > 0 {
				intel++
			}
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
	f.InIfName = x.ifName(f.InIf)
	f.OutIfName = x.ifName(f.OutIf)
}

// miss looks a remote address up in the snapshot's sources.
func (w *Worker) miss(s *snapshot, a flow.Addr) cacheVal {
	v := cacheVal{as: noAS, cc: noValue, intel: noValue}
	ip := netip.AddrFrom16(a).Unmap()
	if s.asn != nil {
		if ai, ok := s.asn.as.Lookup(ip); ok {
			v.as = ai
		}
	}
	if s.country != nil {
		if cc, ok := s.country.cc.Lookup(ip); ok {
			v.cc = cc
		}
	}
	if s.intel != nil {
		v.intel = s.intel.lookup(ip)
	}
	return v
}
