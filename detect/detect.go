// Package detect keeps windowed state per (subscriber pseudonym, remote
// endpoint) pair and per remote endpoint, scores beaconing and fan-in, and
// emits C&C candidates with their evidence. It performs no I/O: flows come
// in through Observe, results go out through Results, and a checkpoint is
// written to an io.Writer the caller passes.
//
// # Model
//
// A pair keeps its first and latest connection start, flow and byte
// counts, and a bounded sample of its most recent connection starts with
// their sizes and durations (docs/detection.md explains the scores built
// from them). A pair's period is measured on the gaps between connection
// starts (a timer) or, unsampled, on the idle times between connections
// when those are clearly more regular (a sleep loop: the period is then
// the sleep). At
// the end of every hop (event time) the window [end-window, end) is
// evaluated: each pair with enough connections gets a beacon score; each
// endpoint gets a period estimated from the pooled intervals of its pairs,
// a fan-in score (subscribers beaconing with that period, discounted by
// popularity), and a combined score with a written explanation.
//
// A Detector is not safe for concurrent use: one goroutine owns it (the
// bus keys flows by remote endpoint so that one detector sees all of an
// endpoint's flows).
package detect

import (
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spaolacci/murmur3"

	"github.com/ccflow/ccflow/flow"
)

// ModelVersion identifies the scoring model; it is written into every
// candidate and pair score, and changes whenever scores change meaning.
const ModelVersion = "ccflow-detect/3"

// Deps are the detector's dependencies.
type Deps struct {
	// Logger receives the detector's few log lines; nil discards them.
	Logger *slog.Logger
	// Registerer registers the metrics; nil means a private registry.
	Registerer prometheus.Registerer
	// Allowlist suppresses candidates; nil means none. Build it with
	// LoadAllowlists or NewAllowlist.
	Allowlist *Allowlist
}

// Result is the outcome of evaluating one window.
type Result struct {
	// WindowStart and WindowEnd bound the window (event time).
	WindowStart, WindowEnd time.Time
	// Candidates are the endpoints scoring at or above the threshold,
	// best first. Suppressed ones (Candidate.Suppressed set) are included
	// for audit and sorted after the reported ones.
	Candidates []flow.Candidate
	// Pairs are pair scores for drill-down, best first: the pairs whose
	// own score reaches pair_threshold (Evidence flow.EvidenceOwn) and,
	// for every reported candidate, the pairs of its endpoint in the
	// window, at most MaxEvidencePairs of them besides those reaching
	// pair_threshold (flow.EvidenceBeaconing for the candidate's beaconing
	// subscribers, flow.EvidenceContact for the others). Endpoints that an
	// allowlist covers have none.
	Pairs []flow.PairScore
}

// Stats is a snapshot of the detector's size.
type Stats struct {
	// Pairs, Subscribers and Endpoints are the tracked entries.
	Pairs, Subscribers, Endpoints int
	// Bytes is the estimated memory of the state.
	Bytes int64
	// Evictions counts pairs evicted for the memory budget so far.
	Evictions int64
	// Watermark is the event-time watermark (zero before the first flow).
	Watermark time.Time
}

// Detector is the streaming C&C detector. Create it with New.
type Detector struct {
	cfg   Config
	log   *slog.Logger
	met   *metrics
	allow *Allowlist

	started  bool
	base     int64 // ms; stored times are offsets from it
	maxStart int64 // newest flow start (absolute ms)
	dataFrom int64 // oldest flow start accepted since the state began (ms)
	nextEval int64 // end of the next window to evaluate (ms)
	lowWater int64 // flows starting earlier are late (ms)
	lastEval int64 // end of the last evaluated window (ms), 0 if none
	// lastWs and lastWe bound the window being evaluated (ms).
	lastWs, lastWe int64

	subIdx  map[subKey]uint32
	subs    []sub
	subFree []uint32
	epIdx   map[epKey]uint32
	infos   map[enrichment]*enrichment
	eps     []endpoint
	epFree  []uint32
	ps      slab
	psFree  []uint32
	table   pairTable
	small   pool
	big     pool
	npairs  int
	sketchB int64 // bytes held by HyperLogLog sketches (estimate)

	seed       maphash.Seed
	fps        [prefetch]uint64 // fingerprints of the chunk being observed
	sink       uint64           // keeps warm's loads from being optimized away
	allowTexts []string
	results    []Result
	rng        *rand.Rand
	ev         evalScratch

	// Counters kept locally on the per-flow path and published to the
	// metrics once per batch.
	nObserved, nCont, nIgnored, nLate, nEvicted int64
	evictedTotal                                int64
}

// New returns a detector. It does no I/O.
func New(cfg Config, deps Deps) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("detect: invalid configuration: %w", err)
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("detect: register metrics: %w", err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Detector{
		cfg:    cfg,
		log:    log.With("stage", "detect"),
		met:    m,
		allow:  deps.Allowlist,
		subIdx: map[subKey]uint32{},
		epIdx:  map[epKey]uint32{},
		infos:  map[enrichment]*enrichment{},
		small:  pool{cap: smallBlock},
		big:    pool{cap: cfg.SampleSize},
		rng:    rand.New(rand.NewPCG(0x63636677, 0x6465746563)),
		seed:   maphash.MakeSeed(),
	}
	d.table.init(1024)
	return d, nil
}

// Config returns the detector's configuration.
func (d *Detector) Config() Config { return d.cfg }

func (d *Detector) start(t int64) {
	w, h := d.cfg.Window.Milliseconds(), d.cfg.Hop.Milliseconds()
	d.started = true
	d.base = t - w - h
	d.maxStart = t
	d.dataFrom = t
	d.nextEval = floorDiv(t, h)*h + h
	d.lowWater = d.nextEval - w
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// maxOffset bounds stored offsets; beyond it the state is rebased.
const maxOffset = 1 << 31

// Observe adds a batch of flows. Only outbound flows of subscribers
// (flow.KindSubscriber, flow.DirOutbound) count: a connection start is a
// subscriber calling a remote endpoint. When the newest flow moves the
// watermark past the end of a window, the window is evaluated before the
// flow is added; its result waits in Results. Observe does not retain
// flows and allocates only when the state grows.
func (d *Detector) Observe(flows []flow.Pseudo) {
	lateness := d.cfg.AllowedLateness.Milliseconds()
	for lo := 0; lo < len(flows); lo += prefetch {
		chunk := flows[lo:min(len(flows), lo+prefetch)]
		d.warm(chunk)
		for i := range chunk {
			f := &chunk[i]
			if d.fps[i] == 0 {
				d.nIgnored++
				continue
			}
			t := f.TimeStartMs
			if !d.started {
				d.start(t)
			}
			if t > d.maxStart {
				d.maxStart = t
				if t-lateness >= d.nextEval {
					d.advance(t - lateness)
				}
			}
			if t < d.lowWater || t-d.base >= 1<<32-1 {
				d.nLate++
				continue
			}
			d.observe(f, t, d.fps[i])
		}
	}
	d.publish()
}

// prefetch is the number of flows whose table slots and pairs are loaded
// ahead of processing them.
const prefetch = 32

// warm computes the fingerprints of a chunk of flows (0 for flows the
// detector ignores) and touches their table slots and pairs. The loads are
// independent of each other, so the CPU overlaps their cache misses
// instead of taking them one flow at a time; the per-flow path then finds
// them in cache. It changes no state.
func (d *Detector) warm(chunk []flow.Pseudo) {
	var vs [prefetch]uint32
	for i := range chunk {
		f := &chunk[i]
		if f.Kind != flow.KindSubscriber || f.Direction != flow.DirOutbound || f.Remote.IsZero() {
			d.fps[i] = 0
			continue
		}
		k := pairKey{sub: f.Sub, ep: epKey{addr: f.Remote, port: f.RemotePort, proto: f.Proto}, epoch: f.Epoch}
		fp := d.fingerprint(&k) | 1 // never 0
		d.fps[i] = fp
		vs[i] = d.table.slots[fp&d.table.mask]
	}
	var sink uint64
	for i := range chunk {
		if v := vs[i]; v != 0 && d.fps[i] != 0 {
			sink += d.ps.at(v&slotIndexMask - 1).fp
		}
	}
	d.sink = sink
}

// Advance moves the watermark to at least wm (for example the wall clock
// minus the allowed lateness, when a partition is idle) and evaluates the
// windows that end before it.
func (d *Detector) Advance(wm time.Time) {
	if !d.started {
		return
	}
	if ms := wm.UnixMilli(); ms >= d.nextEval {
		d.advance(ms)
		d.publish()
	}
}

// Flush evaluates every window due and then the partial window ending just
// after the newest flow, as at the end of a replayed archive. Later flows
// start new state after it.
func (d *Detector) Flush() {
	if !d.started {
		return
	}
	end := d.maxStart + 1
	if end > d.nextEval {
		d.advance(end - 1)
	}
	if d.lastEval < end && d.maxStart >= d.lastEval {
		d.evaluate(end)
	}
	d.publish()
}

// advance evaluates the windows ending at or before watermark wm.
func (d *Detector) advance(wm int64) {
	h, w := d.cfg.Hop.Milliseconds(), d.cfg.Window.Milliseconds()
	for wm >= d.nextEval {
		d.evaluate(d.nextEval)
		d.nextEval += h
		d.lowWater = d.nextEval - w
		// After a gap in the data longer than a window the state is
		// empty: jump to the boundary the watermark is in.
		if d.npairs == 0 && wm-d.nextEval > w {
			d.nextEval = floorDiv(wm, h)*h + h
			d.lowWater = d.nextEval - w
		}
	}
	d.met.watermark.Set(float64(wm) / 1000)
}

// pairKey is what a pair's fingerprint is computed from.
type pairKey struct {
	sub   flow.Pseudonym
	ep    epKey
	epoch uint32
}

func (d *Detector) fingerprint(k *pairKey) uint64 { return maphash.Comparable(d.seed, *k) }

// observe adds one flow starting at t (absolute ms) with fingerprint fp.
func (d *Detector) observe(f *flow.Pseudo, t int64, fp uint64) {
	slot, ok := d.table.find(&d.ps, fp)
	var pi uint32
	if ok {
		pi = d.table.index(slot)
	} else {
		if d.overBudget() {
			d.evict()
			slot, _ = d.table.find(&d.ps, fp)
		}
		pi = d.newPair(d.subFor(f), d.epFor(f), fp, slot)
	}
	p := d.ps.at(pi)
	ep := &d.eps[p.ep]
	d.enrich(ep, f)
	if ep.sk != nil {
		d.sketchInsert(ep, t, murmur3.Sum64(f.Sub[:]))
	}
	off := uint32(t - d.base)
	endOff := off
	if f.TimeEndMs > t {
		endOff = uint32(min(f.TimeEndMs-d.base, 1<<32-1))
	}
	// The flow's duration, for the idle time between connections (a
	// flow ending before it starts has none).
	dur := uint16(durUnknown)
	if f.TimeEndMs >= t {
		dur = encodeDur(uint64(f.TimeEndMs - t))
	}
	if t < d.dataFrom {
		d.dataFrom = t
	}
	p.flows++
	p.addBytes(f.Bytes)
	if p.flags&pairData == 0 && !handshakeOnly(f) {
		p.flags |= pairData
	}
	if r := f.SamplingRate; r > uint32(p.rate) {
		p.rate = uint16(min(r, 65535))
	}
	// A further record of a connection already seen (a router's active
	// timeout splits long connections): same subscriber port, starting
	// where the previous record ended. Where the privacy stage zeroes
	// ephemeral ports (subscriber_ports: coarsen) this cannot be told from
	// a reconnect, and such records count as connections (see
	// docs/detection.md).
	if p.n > 0 && f.SubPort != 0 && f.SubPort == p.lastPort && off >= p.last && off <= p.lastEnd()+continuationGapMs {
		if endOff > p.lastEnd() {
			p.setEnd(endOff)
			// The connection lasts longer: so does its latest sample.
			if s, _, u := d.samples(p); u != nil && s[len(s)-1] == p.last && u[len(u)-1] != durUnknown {
				u[len(u)-1] = encodeDur(uint64(endOff - p.last))
			}
		}
		d.nCont++
		return
	}
	d.nObserved++
	if p.n == 0 || off < p.first {
		p.first = off
	}
	if off >= p.last {
		p.last = off
		p.setEnd(endOff)
		p.lastPort = f.SubPort
	}
	d.addSample(p, off, encodeSize(f.Bytes), dur)
}

// continuationGapMs is the largest pause between two records of one
// connection (same subscriber port) for the second to count as its
// continuation rather than a new connection.
const continuationGapMs = 2000

func (d *Detector) subFor(f *flow.Pseudo) uint32 {
	k := subKey{p: f.Sub, epoch: f.Epoch}
	if i, ok := d.subIdx[k]; ok {
		return i
	}
	var i uint32
	if n := len(d.subFree); n > 0 {
		i = d.subFree[n-1]
		d.subFree = d.subFree[:n-1]
	} else {
		i = uint32(len(d.subs))
		d.subs = append(d.subs, sub{})
	}
	d.subs[i] = sub{key: k, live: true}
	d.subIdx[k] = i
	return i
}

func (d *Detector) epFor(f *flow.Pseudo) uint32 {
	k := epKey{addr: f.Remote, port: f.RemotePort, proto: f.Proto}
	i, ok := d.epIdx[k]
	if !ok {
		if n := len(d.epFree); n > 0 {
			i = d.epFree[n-1]
			d.epFree = d.epFree[:n-1]
		} else {
			i = uint32(len(d.eps))
			d.eps = append(d.eps, endpoint{})
		}
		d.eps[i] = endpoint{key: k}
		d.epIdx[k] = i
	}
	return i
}

// enrich copies the enrichment of the newest flow to its endpoint. The
// enricher interns its strings, so the comparisons are pointer comparisons
// in the common case; a changed enrichment is interned here.
func (d *Detector) enrich(e *endpoint, f *flow.Pseudo) {
	if i := e.info; i == nil {
		if f.RemoteASN == 0 && f.RemoteASOrg == "" && f.RemoteCountry == "" && f.Provider == "" && f.Intel == "" {
			return
		}
	} else if i.asn == f.RemoteASN && i.asOrg == f.RemoteASOrg && i.country == f.RemoteCountry && i.prov == f.Provider && i.intl == f.Intel {
		return
	}
	e.info = d.intern(enrichment{asn: f.RemoteASN, asOrg: f.RemoteASOrg, country: f.RemoteCountry, prov: f.Provider, intl: f.Intel})
}

// intern returns the shared copy of an enrichment (nil for none).
func (d *Detector) intern(v enrichment) *enrichment {
	if v == (enrichment{}) {
		return nil
	}
	if p, ok := d.infos[v]; ok {
		return p
	}
	if len(d.infos) >= maxInterned {
		clear(d.infos) // endpoints keep their pointers; only sharing is lost
	}
	p := &v
	d.infos[v] = p
	return p
}

// maxInterned bounds the enrichment interning table.
const maxInterned = 1 << 16

func (d *Detector) newPair(s, e uint32, fp uint64, slot uint64) uint32 {
	var pi uint32
	if n := len(d.psFree); n > 0 {
		pi = d.psFree[n-1]
		d.psFree = d.psFree[:n-1]
	} else {
		pi = d.ps.add()
	}
	ep := &d.eps[e]
	flags := pairLive
	if d.allowVerdict(e) != "" {
		flags |= pairAllowed
	}
	*d.ps.at(pi) = pair{fp: fp, sub: s, ep: e, cap: inlineSamples, flags: flags}
	ep.npairs++
	d.subs[s].pairs++
	d.table.insertAt(slot, fp, pi)
	d.npairs++
	if d.table.n*4 > len(d.table.slots)*3 {
		d.table.grow(&d.ps)
	}
	if int(ep.npairs) == d.cfg.FanInExact+1 && ep.sk == nil {
		ep.sk = d.newSketchSet()
	}
	return pi
}

// deletePair frees a pair, and its subscriber and endpoint when they are
// left without pairs (an endpoint with a popularity baseline worth keeping
// stays).
func (d *Detector) deletePair(pi uint32) {
	p := d.ps.at(pi)
	if p.flags&pairLive == 0 {
		return
	}
	d.table.remove(&d.ps, pi)
	ep := &d.eps[p.ep]
	ep.npairs--
	s := p.sub
	d.subs[s].pairs--
	d.releaseBlock(p)
	if ep.npairs == 0 && (!ep.hasBase || ep.baseline < float32(d.cfg.PopularMinSubscribers)/2) {
		d.freeEndpoint(p.ep)
	}
	if d.subs[s].pairs == 0 {
		d.freeSub(s)
	}
	*p = pair{}
	d.psFree = append(d.psFree, pi)
	d.npairs--
}

func (d *Detector) freeSub(si uint32) {
	s := &d.subs[si]
	delete(d.subIdx, s.key)
	*s = sub{}
	d.subFree = append(d.subFree, si)
}

func (d *Detector) freeEndpoint(ei uint32) {
	ep := &d.eps[ei]
	d.dropSketches(ep)
	delete(d.epIdx, ep.key)
	*ep = endpoint{}
	d.epFree = append(d.epFree, ei)
}

// samples returns the pair's sample (sorted by start), len p.n: starts,
// sizes, and durations (encodeDur; nil while the sample is inline, where
// durations are not kept).
func (d *Detector) samples(p *pair) ([]uint32, []uint16, []uint16) {
	switch {
	case p.block == 0:
		return p.starts[:p.n], p.sizes[:p.n], nil
	case int(p.cap) == smallBlock:
		s, z, u := d.small.block(p.block - 1)
		return s[:p.n], z[:p.n], u[:p.n]
	default:
		s, z, u := d.big.block(p.block - 1)
		return s[:p.n], z[:p.n], u[:p.n]
	}
}

func (d *Detector) releaseBlock(p *pair) {
	if p.block == 0 {
		return
	}
	if int(p.cap) == smallBlock {
		d.small.release(p.block - 1)
	} else {
		d.big.release(p.block - 1)
	}
	p.block = 0
}

// addSample inserts a connection start in order, with its size and
// duration (encodeDur), growing the storage from inline to a small block
// to a full block, and dropping the oldest start once full. Inline samples
// keep no duration: they move into a block with durUnknown.
func (d *Detector) addSample(p *pair, off uint32, size, dur uint16) {
	if int(p.n) == int(p.cap) && int(p.cap) < d.cfg.SampleSize {
		s, z, u := d.samples(p)
		var nb uint32
		var ns []uint32
		var nz, nu []uint16
		ncap := smallBlock
		if int(p.cap) == smallBlock {
			ncap = d.cfg.SampleSize
		}
		if ncap == smallBlock {
			nb = d.small.alloc()
			ns, nz, nu = d.small.block(nb)
		} else {
			nb = d.big.alloc()
			ns, nz, nu = d.big.block(nb)
		}
		copy(ns, s)
		copy(nz, z)
		if u != nil {
			copy(nu, u)
		} else {
			for i := range s {
				nu[i] = durUnknown
			}
		}
		d.releaseBlock(p)
		p.block = nb + 1
		p.cap = uint8(ncap)
	}
	s, z, u := d.samples(p)
	if int(p.n) == int(p.cap) {
		if off < s[0] {
			return // older than everything kept
		}
		// Drop the oldest eighth at once, so that the copy is amortized
		// over several flows.
		k := max(1, int(p.cap)/8)
		copy(s, s[k:])
		copy(z, z[k:])
		if u != nil {
			copy(u, u[k:])
		}
		p.n -= uint8(k)
	}
	s, z = s[:p.n+1], z[:p.n+1]
	if u != nil {
		u = u[:p.n+1]
	}
	i := int(p.n)
	for i > 0 && s[i-1] > off {
		s[i], z[i] = s[i-1], z[i-1]
		if u != nil {
			u[i] = u[i-1]
		}
		i--
	}
	s[i], z[i] = off, size
	if u != nil {
		u[i] = dur
	}
	p.n++
}

// Bytes estimates the memory held by the state.
func (d *Detector) Bytes() int64 {
	return d.ps.bytes() + int64(cap(d.psFree))*4 +
		int64(len(d.table.slots))*4 +
		d.small.bytes() + d.big.bytes() +
		int64(len(d.subs))*subBytes + int64(len(d.eps))*epBytes +
		d.sketchB
}

func (d *Detector) overBudget() bool {
	if d.cfg.MaxPairs > 0 && d.npairs >= d.cfg.MaxPairs || d.npairs >= maxPairIndex {
		return true
	}
	// Checking bytes on every new pair would cost; the estimate moves in
	// steps when slices grow, so checking every 64 new pairs suffices.
	if d.cfg.MaxBytes > 0 && d.npairs&63 == 0 && d.Bytes() >= d.cfg.MaxBytes {
		return true
	}
	return false
}

// evict frees one pair, chosen among a few random tracked pairs: the one
// idle longest with the lowest last score (allowlisted pairs first). This
// approximates "idle, low-score pairs first" at constant cost.
func (d *Detector) evict() {
	if d.npairs == 0 {
		return
	}
	w := float64(d.cfg.Window.Milliseconds())
	now := float64(d.maxStart - d.base)
	best, bestPrio := uint32(0), math.Inf(1)
	for tries, found := 0, 0; found < 8 && tries < 64; tries++ {
		pi := uint32(d.rng.IntN(d.ps.n))
		p := d.ps.at(pi)
		if p.flags&pairLive == 0 {
			continue
		}
		found++
		idle := min(1, max(0, (now-float64(p.last))/w))
		prio := float64(p.score)/250 + (1 - idle)
		if p.flags&pairAllowed != 0 {
			prio -= 2
		}
		if prio < bestPrio {
			best, bestPrio = pi, prio
		}
	}
	if math.IsInf(bestPrio, 1) {
		// Sparse slab: scan for any live pair.
		for pi := range uint32(d.ps.n) {
			if d.ps.at(pi).flags&pairLive != 0 {
				best = pi
				break
			}
		}
	}
	d.deletePair(best)
	d.nEvicted++
}

// publish moves the local counters into the metrics.
func (d *Detector) publish() {
	if d.nObserved > 0 {
		d.met.flows.WithLabelValues(resultObserved).Add(float64(d.nObserved))
	}
	if d.nCont > 0 {
		d.met.flows.WithLabelValues(resultContinuation).Add(float64(d.nCont))
	}
	if d.nIgnored > 0 {
		d.met.flows.WithLabelValues(resultIgnored).Add(float64(d.nIgnored))
	}
	if d.nLate > 0 {
		d.met.flows.WithLabelValues(resultLate).Add(float64(d.nLate))
	}
	if d.nEvicted > 0 {
		d.met.evictions.Add(float64(d.nEvicted))
		d.evictedTotal += d.nEvicted
	}
	d.nObserved, d.nCont, d.nIgnored, d.nLate, d.nEvicted = 0, 0, 0, 0, 0
	d.met.pairs.Set(float64(d.npairs))
	d.met.bytes.Set(float64(d.Bytes()))
	d.met.endpoints.Set(float64(len(d.eps) - len(d.epFree)))
}

// Results returns the windows evaluated since the last call, oldest first,
// and forgets them.
func (d *Detector) Results() []Result {
	r := d.results
	d.results = nil
	return r
}

// Stats returns the size of the state.
func (d *Detector) Stats() Stats {
	s := Stats{
		Pairs:       d.npairs,
		Subscribers: len(d.subs) - len(d.subFree),
		Endpoints:   len(d.eps) - len(d.epFree),
		Bytes:       d.Bytes(),
		Evictions:   d.evictedTotal + d.nEvicted,
	}
	if d.started {
		s.Watermark = time.UnixMilli(d.maxStart - d.cfg.AllowedLateness.Milliseconds()).UTC()
	}
	return s
}
