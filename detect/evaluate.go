package detect

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ccflow/ccflow/flow"
)

// evalScratch holds buffers reused by every evaluation.
type evalScratch struct {
	fs     fitScratch
	starts []uint32
	sizes  []float64
	// ends are the connection ends (offsets, ms) matching starts; -1
	// when unknown.
	ends        []int64
	gaps        []float64
	idle        []float64
	durs        []float64
	pooled      []float64
	pooledSizes []float64
	pooledIdle  []float64
	pooledDurs  []float64
	elig        []eligible
	eps         []epEval
	evidence    []evidenceRef
	order       []int32
	// order32 lists live pairs grouped by endpoint; the pairs of endpoint
	// i are order32[epStart[i]:epStart[i+1]].
	order32 []uint32
	epStart []int32
}

// groupPairs groups the live pairs by endpoint (a counting sort into
// ev.order32 and ev.epStart), so that pairs need no per-endpoint list: 8
// bytes less per pair, at 4 bytes per pair of scratch during evaluation.
func (d *Detector) groupPairs() {
	ev := &d.ev
	ne := len(d.eps)
	ev.epStart = slices.Grow(ev.epStart[:0], ne+1)[:ne+1]
	clear(ev.epStart)
	for pi := range uint32(d.ps.n) {
		if p := d.ps.at(pi); p.flags&pairLive != 0 {
			ev.epStart[p.ep+1]++
		}
	}
	for i := 1; i <= ne; i++ {
		ev.epStart[i] += ev.epStart[i-1]
	}
	ev.order32 = slices.Grow(ev.order32[:0], d.npairs)[:d.npairs]
	pos := ev.order
	pos = slices.Grow(pos[:0], ne)[:ne]
	copy(pos, ev.epStart[:ne])
	for pi := range uint32(d.ps.n) {
		if p := d.ps.at(pi); p.flags&pairLive != 0 {
			ev.order32[pos[p.ep]] = pi
			pos[p.ep]++
		}
	}
	ev.order = pos[:0]
}

// eligible is a pair with enough connections in the window to be scored.
type eligible struct {
	pi       uint32
	conns    int
	fit      periodFit
	tm       timing
	size     float64
	count    float64
	coverage float64
	score    float64 // beacon score at the pair's own period
	disc     float64 // fan-out discount of its subscriber
	// sched says which series fit and tm were measured on.
	sched schedule
	// noData says that no connection of the pair exchanged data (TCP,
	// unsampled, handshakes only). It does not change the score: bots
	// whose C&C is down retry on their schedule (every NjRAT connection
	// of the njrat-zeek capture is an unanswered SYN), and so do
	// peer-to-peer clients retrying a gone peer; the explanation says it.
	noData bool
	// beacons says that the pair is counted among its endpoint's
	// beaconing subscribers (set by scoreEndpoint).
	beacons bool
}

// epEval collects one endpoint's window totals.
type epEval struct {
	ei          uint32
	lo, hi      int // its eligible pairs: ev.elig[lo:hi]
	subs        int // distinct subscribers in the window (fan-in)
	flows       int64
	bytes       uint64
	first, last uint32
	rate        uint16
}

// beaconScore combines the components of a pair (or pooled) beacon score.
// Timing regularity weighs the period fit most (the share of intervals
// that are whole numbers of periods, beyond chance), then the interval
// dispersion, then skew (a weak signal: a Poisson process is nearly
// symmetric in quartiles too); flow-size regularity modulates it (x0.75 for entirely
// irregular sizes) but cannot make random timing look like a beacon. The
// connection count scales it down when evidence is thin, and coverage when
// the connections span less than half of the data in the window (bursts).
func beaconScore(tm timing, size, count, coverage float64) float64 {
	return clamp01(count * tm.value() * (0.75 + 0.25*size) * min(1, 2*coverage))
}

// fanInScore turns a weighted count b of subscribers beaconing with the
// endpoint's period into a score, 1 - exp(-(b-1)^2/4): 0 for one, 0.22
// for two (a household's two devices running one app), 0.63 for three,
// 0.89 for four, 0.98 for five; then scaled by the square root of the
// beaconing share of all subscribers that reached the endpoint, and by
// 1 - popularity.
func fanInScore(beaconing float64, share, popularity float64) float64 {
	if beaconing <= 1 {
		return 0
	}
	b := beaconing - 1
	return clamp01((1 - math.Exp(-b*b/4)) * math.Sqrt(clamp01(share)) * (1 - popularity))
}

// beaconCeiling caps what timing alone contributes to the combined score:
// one regular subscriber is never certain C&C (software updaters, pollers
// and IoT devices beacon too); fan-in and intel raise the score beyond it.
const beaconCeiling = 0.9

// popularityScore is 0 below the minimum and reaches 1 when the baseline
// is PopularShare of the active subscribers.
func (d *Detector) popularityScore(baseline float64, active int) float64 {
	if baseline < float64(d.cfg.PopularMinSubscribers) || active <= 0 {
		return 0
	}
	return clamp01(baseline / float64(active) / d.cfg.PopularShare)
}

// offsetClamp converts an absolute time to a stored offset, clamped to the
// uint32 range.
func (d *Detector) offsetClamp(t int64) uint32 {
	return uint32(max(0, min(t-d.base, 1<<32-1)))
}

// windowStarts collects the pair's connection starts in [lo, hi), merging
// starts closer than MinPeriod (retries, parallel connections), and their
// sizes and ends; it returns the starts (offsets) and fills ev.sizes and
// ev.ends. Merged connections end with the last of them (unknown when any
// end is).
func (d *Detector) windowStarts(p *pair, lo, hi uint32) []uint32 {
	ev := &d.ev
	ev.starts, ev.sizes, ev.ends = ev.starts[:0], ev.sizes[:0], ev.ends[:0]
	minGap := uint32(d.cfg.MinPeriod.Milliseconds())
	s, z, u := d.samples(p)
	for i, t := range s {
		if t < lo || t >= hi {
			continue
		}
		end := int64(-1)
		if u != nil {
			if ms, ok := decodeDur(u[i]); ok {
				end = int64(t) + int64(ms)
			}
		}
		if n := len(ev.starts); n > 0 && t-ev.starts[n-1] < minGap {
			if ev.ends[n-1] >= 0 && end >= 0 {
				ev.ends[n-1] = max(ev.ends[n-1], end)
			} else {
				ev.ends[n-1] = -1
			}
			continue
		}
		ev.starts = append(ev.starts, t)
		ev.sizes = append(ev.sizes, decodeSize(z[i]))
		ev.ends = append(ev.ends, end)
	}
	return ev.starts
}

func gapsOf(starts []uint32, dst []float64) []float64 {
	dst = dst[:0]
	for i := 1; i < len(starts); i++ {
		dst = append(dst, float64(starts[i]-starts[i-1])/1000)
	}
	return dst
}

// idleGapsOf appends to idle the idle times (seconds) between consecutive
// connections: the start of connection i+1 minus the end of connection i,
// and to durs the duration of connection i. A connection whose end is
// unknown counts as lasting fallback seconds (skipped when fallback < 0).
// A connection still open when the next one starts (idle time <= 0: a
// long-lived connection, or parallel ones) gives no idle time. It returns
// the slices and the number of gaps whose previous connection's end was
// known (or assumed).
func idleGapsOf(starts []uint32, ends []int64, fallback float64, idle, durs []float64) ([]float64, []float64, int) {
	known := 0
	for i := 0; i+1 < len(starts); i++ {
		var dur float64
		switch {
		case ends[i] >= 0:
			dur = float64(ends[i]-int64(starts[i])) / 1000
		case fallback >= 0:
			dur = fallback
		default:
			continue
		}
		known++
		if g := float64(starts[i+1]-starts[i])/1000 - dur; g > 0 {
			idle = append(idle, g)
			durs = append(durs, dur)
		}
	}
	return idle, durs, known
}

func (d *Detector) tol() float64 { return d.cfg.PeriodTolerance }

// fitAt measures how well gaps fit a given period.
func fitAt(gaps []float64, p, tol float64) periodFit {
	if p <= 0 || len(gaps) == 0 {
		return periodFit{}
	}
	var in int
	var sumK float64
	for _, g := range gaps {
		k := beats(g, p)
		sumK += k
		if math.Abs(g/p-k) <= tol {
			in++
		}
	}
	return periodFit{Period: p, Inliers: float64(in) / float64(len(gaps)), MeanBeats: sumK / float64(len(gaps))}
}

// evaluate scores the window ending at we (absolute ms) and appends its
// Result, then expires state that the next window no longer covers.
func (d *Detector) evaluate(we int64) {
	began := time.Now()
	cfg := &d.cfg
	ws := we - cfg.Window.Milliseconds()
	d.lastWs, d.lastWe = ws, we
	lo, hi := d.offsetClamp(ws), d.offsetClamp(we)
	spanFrom := max(ws, d.dataFrom)
	spanTo := min(we, d.maxStart+1)
	span := float64(max(1, spanTo-spanFrom)) / 1000
	minP, maxP := cfg.MinPeriod.Seconds(), cfg.MaxPeriod.Seconds()
	tol := d.tol()
	ev := &d.ev
	ev.elig, ev.eps = ev.elig[:0], ev.eps[:0]
	for i := range d.subs {
		d.subs[i].beacons = 0
	}
	active := len(d.subs) - len(d.subFree)

	// Pass 1: window totals per endpoint, and pair scores.
	d.groupPairs()
	for ei := range d.eps {
		ep := &d.eps[ei]
		group := ev.order32[ev.epStart[ei]:ev.epStart[ei+1]]
		if len(group) == 0 {
			continue
		}
		e := epEval{ei: uint32(ei), lo: len(ev.elig), first: math.MaxUint32}
		for _, pi := range group {
			p := d.ps.at(pi)
			if p.last < lo || p.first >= hi {
				p.score = 0
				continue
			}
			e.subs++
			e.flows += int64(p.flows)
			e.bytes += p.totalBytes()
			e.first = min(e.first, max(p.first, lo))
			e.last = max(e.last, min(p.last, hi-1))
			e.rate = max(e.rate, p.rate)
			starts := d.windowStarts(p, lo, hi)
			if len(starts) < minPooled {
				p.score = 0
				continue
			}
			el := d.scorePair(p, starts, span, minP, maxP, tol)
			el.pi = pi
			ev.elig = append(ev.elig, el)
			p.score = uint8(el.score * 250)
		}
		e.hi = len(ev.elig)
		if ep.sk != nil {
			e.subs = max(e.subs, d.sketchFanIn(ep, ws, we))
		}
		if e.subs > 0 {
			ev.eps = append(ev.eps, e)
		}
	}

	// Pass 2: each subscriber's beaconing endpoints (fan-out), and the
	// discounts that follow from them.
	d.fanOut()

	// Pass 3: endpoint scores, candidates, pair scores.
	res := Result{WindowStart: time.UnixMilli(ws).UTC(), WindowEnd: time.UnixMilli(we).UTC()}
	for i := range ev.eps {
		e := &ev.eps[i]
		ep := &d.eps[e.ei]
		// Popularity baseline: it rises at once to the window's fan-in
		// and decays slowly (half-life popularity_half_life) while fewer
		// subscribers come, so that a service is popular from the first
		// window that sees its audience (the first windows of a stream
		// see only part of it) and stays popular through quiet days.
		if !ep.hasBase || float32(e.subs) >= ep.baseline {
			ep.baseline, ep.hasBase = float32(e.subs), true
		} else {
			a := math.Pow(0.5, cfg.Hop.Seconds()/cfg.PopularityHalfLife.Seconds())
			ep.baseline = float32(float64(ep.baseline)*a + float64(e.subs)*(1-a))
		}
		pop := d.popularityScore(float64(ep.baseline), active)
		if e.hi > e.lo {
			if c, ok := d.scoreEndpoint(e, pop, span, minP, maxP, tol, &res); ok {
				res.Candidates = append(res.Candidates, c)
			}
		}
	}
	slices.SortStableFunc(res.Candidates, func(a, b flow.Candidate) int {
		if (a.Suppressed == "") != (b.Suppressed == "") {
			if a.Suppressed == "" {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.Score, a.Score)
	})
	slices.SortStableFunc(res.Pairs, func(a, b flow.PairScore) int { return cmp.Compare(b.Score, a.Score) })
	d.results = append(d.results, res)
	d.lastEval = we
	d.met.windows.Inc()
	for _, c := range res.Candidates {
		if c.Suppressed != "" {
			d.met.candidates.WithLabelValues("suppressed").Inc()
		} else {
			d.met.candidates.WithLabelValues("reported").Inc()
		}
	}
	d.expire(we + cfg.Hop.Milliseconds() - cfg.Window.Milliseconds())
	d.met.evalSeconds.Observe(time.Since(began).Seconds())
	d.log.Debug("window evaluated", "window_end", res.WindowEnd, "candidates", len(res.Candidates), "pairs", d.npairs)
}

// maxPooledGaps bounds the pooled intervals an endpoint's period is fitted
// to: a popular endpoint with thousands of eligible pairs would otherwise
// cost a fit over hundreds of thousands of gaps per hop. A systematic
// sample of 4096 of them (every pair contributes) estimates the period and
// its components as well.
const maxPooledGaps = 4096

// thin keeps every k-th value of v so that at most n remain, in place.
func thin(v []float64, n int) []float64 {
	if len(v) <= n {
		return v
	}
	k := (len(v) + n - 1) / n
	w := 0
	for i := 0; i < len(v); i += k {
		v[w] = v[i]
		w++
	}
	return v[:w]
}

// minPooled is the least number of connections for a pair's intervals to
// join its endpoint's pooled period estimate (pairs below MinConnections
// are not scored alone).
const minPooled = 3

// fanOut counts, per subscriber, the beaconing pairs to endpoints that no
// allowlist covers, and sets each scored pair's discount: 1/m for m
// beaconing endpoints of the subscriber with about the same period (one
// application polling several servers on one timer: a web page's
// refresh, a peer-to-peer client), times FanOutFree/n when the subscriber
// beacons to n > FanOutFree endpoints in all.
func (d *Detector) fanOut() {
	ev := &d.ev
	idx := ev.order[:0]
	for i := range ev.elig {
		el := &ev.elig[i]
		el.disc = 1
		p := d.ps.at(el.pi)
		if el.score >= d.cfg.PairThreshold && d.allowVerdict(p.ep) == "" {
			d.subs[p.sub].beacons++
			idx = append(idx, int32(i))
		}
	}
	slices.SortFunc(idx, func(a, b int32) int {
		ea, eb := &ev.elig[a], &ev.elig[b]
		if c := cmp.Compare(d.ps.at(ea.pi).sub, d.ps.at(eb.pi).sub); c != 0 {
			return c
		}
		return cmp.Compare(ea.sched.onCycle(), eb.sched.onCycle())
	})
	for lo := 0; lo < len(idx); {
		s := d.ps.at(ev.elig[idx[lo]].pi).sub
		hi := lo
		for hi < len(idx) && d.ps.at(ev.elig[idx[hi]].pi).sub == s {
			hi++
		}
		all := hi - lo
		for i := lo; i < hi; i++ {
			el := &ev.elig[idx[i]]
			same := 0
			for j := lo; j < hi; j++ {
				if within(ev.elig[idx[j]].sched.onCycle(), el.sched.onCycle(), 0.05) {
					same++
				}
			}
			el.disc = 1 / float64(max(1, same))
			if all > d.cfg.FanOutFree {
				el.disc *= float64(d.cfg.FanOutFree) / float64(all)
			}
		}
		lo = hi
	}
	ev.order = idx
}

// fullGaps is the number of gaps at which the count component reaches 1,
// at a sampling rate: under 1:N sampling a beacon yields N times fewer
// observations over the same time, but each spans about N beats and so
// tests the schedule over a longer stretch; the requirement falls with
// the square root of N.
func (d *Detector) fullGaps(rate uint16) int {
	full := float64(d.cfg.FullConnections-1) / math.Sqrt(float64(max(1, rate)))
	return max(d.cfg.MinConnections-1, int(math.Round(full)))
}

// countGaps is the number of intervals the count component credits a
// pair with: the intervals of its sample, or, when the sample holds only
// the most recent connections, about as many as it had flows.
func countGaps(p *pair, sampled int) int {
	if int(p.cap) > inlineSamples && int(p.flows) > int(p.n) && int(p.flows) > sampled+1 {
		return int(p.flows) - 1
	}
	return sampled
}

// scorePair scores one pair at its own period.
func (d *Detector) scorePair(p *pair, starts []uint32, span, minP, maxP, tol float64) eligible {
	ev := &d.ev
	ev.gaps = gapsOf(starts, ev.gaps)
	el := eligible{conns: len(starts)}
	// A sleep loop shows its schedule in the idle times between
	// connections (scheduleTiming).
	var known int
	if p.rate <= 1 {
		ev.idle, ev.durs, known = idleGapsOf(starts, ev.ends, -1, ev.idle[:0], ev.durs[:0])
	} else {
		ev.idle, ev.durs = ev.idle[:0], ev.durs[:0]
	}
	el.sched = scheduleTiming(ev.gaps, ev.idle, ev.durs, known, d.cfg.MinConnections-1, minP, maxP, tol, p.rate, &ev.fs)
	el.tm, el.fit = el.sched.tm, el.sched.tm.fit
	el.size = sizeScore(ev.sizes, &ev.fs)
	el.count = countScore(countGaps(p, len(ev.gaps)), d.cfg.MinConnections-1, d.fullGaps(p.rate))
	lo, hi := d.offsetClamp(d.lastWs), d.offsetClamp(d.lastWe)
	el.coverage = clamp01(float64(min(p.last, hi-1)-max(p.first, lo)) / 1000 / span)
	el.score = beaconScore(el.tm, el.size, el.count, el.coverage)
	el.noData = p.flags&pairData == 0 && d.eps[p.ep].key.proto == 6
	return el
}

// scoreEndpoint scores an endpoint with eligible pairs. It returns the
// candidate and whether it reaches the threshold; unless an allowlist
// covers the endpoint, its pair scores go to res.Pairs (pairScores).
func (d *Detector) scoreEndpoint(e *epEval, pop, span, minP, maxP, tol float64, res *Result) (flow.Candidate, bool) {
	cfg := &d.cfg
	ev := &d.ev
	ep := &d.eps[e.ei]
	E := ev.elig[e.lo:e.hi]
	lo, hi := d.offsetClamp(res.WindowStart.UnixMilli()), d.offsetClamp(res.WindowEnd.UnixMilli())
	suppressed := d.allowVerdict(e.ei)
	var info enrichment
	if ep.info != nil {
		info = *ep.info
	}

	top := 0
	noData := true // no eligible pair exchanged data
	for i := range E {
		if E[i].score*E[i].disc > E[top].score*E[top].disc {
			top = i
		}
		noData = noData && E[i].noData
	}
	best := E[top]
	bestScore := best.score * best.disc
	chosen := struct {
		fit                       periodFit
		tm                        timing
		size, count, coverage     float64
		pooled                    bool
		sched                     schedule
		conns                     int64
		beaconing                 int
		weighted, discount, score float64
	}{fit: best.fit, tm: best.tm, size: best.size, count: best.count, coverage: best.coverage, sched: best.sched,
		conns: int64(d.ps.at(best.pi).flows), discount: best.disc, score: bestScore}
	if best.score >= cfg.PairThreshold {
		chosen.beaconing, chosen.weighted = 1, best.disc
	}

	if len(E) >= 2 {
		// Pool the intervals of every eligible pair: subscribers running
		// the same bot share its period even when each alone has few
		// connections (as under sampling). Unsampled, the idle times are
		// pooled too (see scorePair).
		ev.pooled, ev.pooledSizes = ev.pooled[:0], ev.pooledSizes[:0]
		ev.pooledIdle, ev.pooledDurs = ev.pooledIdle[:0], ev.pooledDurs[:0]
		var covMax float64
		var conns int64
		var countedGaps, known int
		for i := range E {
			starts := d.windowStarts(d.ps.at(E[i].pi), lo, hi)
			ev.gaps = gapsOf(starts, ev.gaps)
			countedGaps += countGaps(d.ps.at(E[i].pi), len(ev.gaps))
			ev.pooled = append(ev.pooled, ev.gaps...)
			ev.pooledSizes = append(ev.pooledSizes, ev.sizes...)
			if e.rate <= 1 {
				var k int
				ev.pooledIdle, ev.pooledDurs, k = idleGapsOf(starts, ev.ends, -1, ev.pooledIdle, ev.pooledDurs)
				known += k
			}
			covMax = max(covMax, E[i].coverage)
			conns += int64(d.ps.at(E[i].pi).flows)
		}
		ev.pooled = thin(ev.pooled, maxPooledGaps)
		ev.pooledSizes = thin(ev.pooledSizes, maxPooledGaps)
		if n := len(ev.pooledIdle); n > maxPooledGaps {
			ev.pooledIdle = thin(ev.pooledIdle, maxPooledGaps)
			ev.pooledDurs = thin(ev.pooledDurs, maxPooledGaps)
			known = known * len(ev.pooledIdle) / n // the same share of gaps
		}
		psched := scheduleTiming(ev.pooled, ev.pooledIdle, ev.pooledDurs, known, cfg.MinConnections-1, minP, maxP, tol, e.rate, &ev.fs)
		ptm, pfit := psched.tm, psched.tm.fit
		psize := sizeScore(ev.pooledSizes, &ev.fs)
		pcount := countScore(countedGaps, cfg.MinConnections-1, d.fullGaps(e.rate))
		// Which subscribers beacon with the pooled period? With the idle
		// model, on their idle times plus the median duration, against
		// the cycle (see scheduleTiming); a connection whose duration is
		// not kept (a pair's first three) counts as lasting the median.
		var beaconing int
		var weighted, discSum float64
		for i := range E {
			starts := d.windowStarts(d.ps.at(E[i].pi), lo, hi)
			p := pfit.Period
			if psched.idle {
				ev.gaps, ev.durs, _ = idleGapsOf(starts, ev.ends, psched.dur, ev.gaps[:0], ev.durs[:0])
				for j := range ev.gaps {
					ev.gaps[j] += psched.dur
				}
				p += psched.dur
			} else {
				ev.gaps = gapsOf(starts, ev.gaps)
			}
			if d.beaconsWith(&E[i], ev.gaps, p) {
				E[i].beacons = true
				beaconing++
				weighted += E[i].disc
				discSum += E[i].disc
			}
		}
		if beaconing >= 2 {
			disc := discSum / float64(beaconing)
			ps := beaconScore(ptm, psize, pcount, covMax) * disc
			if ps >= chosen.score || beaconing > chosen.beaconing {
				chosen.fit, chosen.tm, chosen.size, chosen.count, chosen.coverage = pfit, ptm, psize, pcount, covMax
				chosen.pooled, chosen.conns, chosen.discount = true, conns, disc
				chosen.sched = psched
				chosen.score = max(ps, chosen.score)
			}
			chosen.beaconing, chosen.weighted = beaconing, weighted
		}
	}
	if chosen.beaconing < 2 {
		// No pooled schedule: at most the best pair beacons.
		for i := range E {
			E[i].beacons = false
		}
		E[top].beacons = chosen.beaconing == 1
	}

	share := float64(chosen.beaconing) / float64(max(1, e.subs))
	fan := fanInScore(chosen.weighted, share, pop)
	score := 1 - (1-beaconCeiling*chosen.score)*(1-fan)
	score *= 1 - 0.5*pop
	if info.prov != "" {
		score *= 1 - cfg.ProviderDiscount
	}
	if info.intl != "" {
		score += (1 - score) * cfg.IntelBoost
	}
	score = clamp01(score)

	if suppressed == "" {
		d.pairScores(e, E, score >= cfg.Threshold, res)
	}
	if score < cfg.Threshold {
		return flow.Candidate{}, false
	}
	c := flow.Candidate{
		RemoteAddr: ep.key.addr.Netip(), RemotePort: ep.key.port, Proto: flow.IPProto(ep.key.proto),
		WindowStart: res.WindowStart, WindowEnd: res.WindowEnd,
		Score: round3(score),
		Components: flow.Components{
			Beacon: round3(chosen.score), Skew: round3(chosen.tm.Skew), MADM: round3(chosen.tm.MADM),
			Size: round3(chosen.size), Count: round3(chosen.count), Coverage: round3(chosen.coverage),
			Period: round3(chosen.tm.Period), FanIn: round3(fan), Popularity: round3(pop),
		},
		PeriodS: round3(chosen.fit.Period), JitterS: round3(chosen.tm.Jitter),
		Subscribers: e.subs, BeaconingSubscribers: chosen.beaconing,
		Flows: e.flows, Bytes: e.bytes, SamplingRate: uint32(max(1, e.rate)),
		FirstSeen: d.timeOf(e.first), LastSeen: d.timeOf(e.last),
		Suppressed: suppressed,
		ASN:        info.asn, ASOrg: info.asOrg, Country: info.country,
		Intel:        splitIntel(info.intl),
		ModelVersion: ModelVersion,
	}
	if info.intl != "" {
		c.Components.Intel = 1
	}
	if info.prov != "" {
		c.Components.Provider = 1
	}
	c.Explanation = explain(&c, info.prov, chosen.conns, chosen.fit.Inliers, chosen.discount, chosen.pooled, noData, chosen.tm.Comb, chosen.sched)
	return c, true
}

// MaxEvidencePairs bounds the pair scores emitted as evidence of one
// candidate in one window: the candidate's beaconing subscribers first,
// then by score and flows. Pairs whose own score reaches pair_threshold are
// emitted beyond it too. It bounds the rows a popular endpoint that becomes
// a candidate adds to beacon_pairs at every hop; Candidate.Subscribers and
// BeaconingSubscribers still count them all.
const MaxEvidencePairs = 100

// evidenceRef is a pair of a candidate's endpoint in the window: its
// eligible entry (an index into the endpoint's eligible pairs), or -1 for
// a pair with fewer than minPooled connections in the window, not scored.
type evidenceRef struct {
	pi uint32
	el int32
}

// pairScores appends the endpoint's pair scores to res.Pairs: for a
// reported candidate, every pair of the endpoint in the window (bounded by
// MaxEvidencePairs) with its evidence; otherwise the pairs whose own score
// (fan-out discount included) reaches pair_threshold.
func (d *Detector) pairScores(e *epEval, E []eligible, candidate bool, res *Result) {
	th := d.cfg.PairThreshold
	if !candidate {
		for i := range E {
			if E[i].score*E[i].disc >= th {
				res.Pairs = append(res.Pairs, d.pairScore(E[i].pi, &E[i], flow.EvidenceOwn, res))
			}
		}
		return
	}
	ev := &d.ev
	lo, hi := d.offsetClamp(res.WindowStart.UnixMilli()), d.offsetClamp(res.WindowEnd.UnixMilli())
	refs := ev.evidence[:0]
	// E holds the eligible pairs in the order of the endpoint's group.
	j := 0
	for _, pi := range ev.order32[ev.epStart[e.ei]:ev.epStart[e.ei+1]] {
		if j < len(E) && E[j].pi == pi {
			refs = append(refs, evidenceRef{pi: pi, el: int32(j)})
			j++
			continue
		}
		if p := d.ps.at(pi); p.last >= lo && p.first < hi {
			refs = append(refs, evidenceRef{pi: pi, el: -1})
		}
	}
	key := func(r evidenceRef) (bool, float64) {
		if r.el < 0 {
			return false, 0
		}
		return E[r.el].beacons, E[r.el].score * E[r.el].disc
	}
	slices.SortFunc(refs, func(a, b evidenceRef) int {
		ba, sa := key(a)
		bb, sb := key(b)
		if ba != bb {
			if ba {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(sb, sa); c != 0 {
			return c
		}
		pa, pb := d.ps.at(a.pi), d.ps.at(b.pi)
		if c := cmp.Compare(pb.flows, pa.flows); c != 0 {
			return c
		}
		return bytes.Compare(d.subs[pa.sub].key.p[:], d.subs[pb.sub].key.p[:])
	})
	for k, r := range refs {
		beacons, score := key(r)
		if k >= MaxEvidencePairs && score < th {
			continue
		}
		var el *eligible
		if r.el >= 0 {
			el = &E[r.el]
		}
		evidence := flow.EvidenceContact
		if beacons {
			evidence = flow.EvidenceBeaconing
		}
		res.Pairs = append(res.Pairs, d.pairScore(r.pi, el, evidence, res))
	}
	ev.evidence = refs
}

// pairScore returns the pair score of pair pi in the window of res; el is
// its eligible entry, nil when it was not scored (fewer than minPooled
// connections in the window).
func (d *Detector) pairScore(pi uint32, el *eligible, evidence string, res *Result) flow.PairScore {
	p := d.ps.at(pi)
	s := &d.subs[p.sub]
	ep := &d.eps[p.ep]
	lo, hi := d.offsetClamp(res.WindowStart.UnixMilli()), d.offsetClamp(res.WindowEnd.UnixMilli())
	ps := flow.PairScore{
		WindowStart: res.WindowStart, WindowEnd: res.WindowEnd,
		Epoch: s.key.epoch, Sub: s.key.p,
		RemoteAddr: ep.key.addr.Netip(), RemotePort: ep.key.port, Proto: flow.IPProto(ep.key.proto),
		Flows: int64(p.flows), Bytes: p.totalBytes(),
		FirstSeen: d.timeOf(max(p.first, lo)), LastSeen: d.timeOf(min(p.last, hi-1)),
		SamplingRate: uint32(max(1, p.rate)), ModelVersion: ModelVersion,
		Evidence: evidence,
	}
	if el != nil {
		ps.Score = round3(el.score * el.disc)
		ps.Components = flow.Components{
			Beacon: round3(el.score), Skew: round3(el.tm.Skew), MADM: round3(el.tm.MADM),
			Size: round3(el.size), Count: round3(el.count), Coverage: round3(el.coverage),
			Period: round3(el.tm.Period),
		}
		ps.PeriodS, ps.JitterS = round3(el.fit.Period), round3(el.tm.Jitter)
	}
	return ps
}

// beaconsWith says whether a pair beacons with period p (the endpoint's
// pooled period on the cycle scale, schedule.onCycle; gaps are on the
// same scale), for the fan-in count: when its own period is within 10% of
// p and its own score reaches the pair threshold, or when its intervals
// are whole numbers of periods: at least 3/4 of them within the
// tolerance, or at least half within half the tolerance (a precise timer
// with odd intervals mixed in). Chance reaches about half and a quarter.
// A pair with fewer than MinConnections connections needs two intervals,
// every one within half the tolerance (chance: about 6%).
func (d *Detector) beaconsWith(el *eligible, gaps []float64, p float64) bool {
	tol := d.tol()
	if len(gaps) < 2 {
		return false
	}
	if el.conns < d.cfg.MinConnections {
		return fitAt(gaps, p, tol/2).Inliers == 1
	}
	if el.score >= d.cfg.PairThreshold && within(el.sched.onCycle(), p, 0.1) {
		return true
	}
	return fitAt(gaps, p, tol).Inliers >= 0.75 || fitAt(gaps, p, tol/2).Inliers >= 0.5
}

func within(a, b, rel float64) bool { return b > 0 && math.Abs(a-b) <= rel*b }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func (d *Detector) timeOf(off uint32) time.Time { return time.UnixMilli(d.base + int64(off)).UTC() }

func splitIntel(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// allowVerdict returns (and caches) the allowlist rule that covers an
// endpoint, or "".
func (d *Detector) allowVerdict(ei uint32) string {
	ep := &d.eps[ei]
	if ep.allowed == 0 {
		ep.allowed = -1
		if m := d.allow.Match(ep.key.addr, ep.key.port, ep.key.proto); m != "" {
			i := slices.Index(d.allowTexts, m)
			if i < 0 {
				i = len(d.allowTexts)
				d.allowTexts = append(d.allowTexts, m)
			}
			ep.allowed = int32(i + 1)
		}
	}
	if ep.allowed < 0 {
		return ""
	}
	return d.allowTexts[ep.allowed-1]
}

// explain writes the human-readable explanation of a candidate.
func explain(c *flow.Candidate, provider string, conns int64, inliers, discount float64, pooled, noData bool, comb float64, sched schedule) string {
	var b strings.Builder
	ep := netip.AddrPortFrom(c.RemoteAddr, c.RemotePort).String() + "/" + c.Proto.String()
	if sched.idle {
		fmt.Fprintf(&b, "%s is called in a sleep loop, %s after each connection ends (jitter %s; %s start to start, less regular: it includes each request's duration)",
			ep, secs(c.PeriodS), secs(c.JitterS), secs(sched.cycle))
	} else {
		fmt.Fprintf(&b, "%s is called every %s start to start (jitter %s)", ep, secs(c.PeriodS), secs(c.JitterS))
	}
	who := "1 subscriber"
	if c.BeaconingSubscribers > 1 {
		who = fmt.Sprintf("%d of its %d subscribers on the same schedule", c.BeaconingSubscribers, c.Subscribers)
	} else if c.Subscribers > 1 {
		who = fmt.Sprintf("1 of its %d subscribers", c.Subscribers)
	}
	active := c.LastSeen.Sub(c.FirstSeen).Round(time.Second)
	fmt.Fprintf(&b, " by %s: %d connections over %s (%.0f%% of the data in the window)", who, conns, active, 100*min(1, c.Components.Coverage))
	fmt.Fprintf(&b, "; intervals %s (%.0f%% fit the period, dispersion %.2f, skew %.2f), flow sizes %s (%.2f)",
		level(c.Components.MADM), 100*inliers, c.Components.MADM, c.Components.Skew, level(c.Components.Size), c.Components.Size)
	if comb > 0 {
		fmt.Fprintf(&b, "; regularity measured on a finer comb of %s (alternating intervals, or a second schedule between the beats)", secs(comb))
	}
	if c.Components.Count < 1 {
		fmt.Fprintf(&b, "; few connections (count %.2f)", c.Components.Count)
	}
	if noData {
		b.WriteString("; no connection exchanged data (refused or unanswered: a server that is down or gone, retried on a schedule)")
	}
	if pooled {
		b.WriteString("; period estimated from the pooled intervals of all its subscribers")
	}
	if c.Components.FanIn > 0 {
		fmt.Fprintf(&b, "; fan-in %.2f", c.Components.FanIn)
	}
	if c.SamplingRate > 1 {
		fmt.Fprintf(&b, "; scores assume 1:%d sampling", c.SamplingRate)
	}
	if discount < 1 {
		fmt.Fprintf(&b, "; its subscriber beacons to many endpoints (fan-out discount x%.2f)", discount)
	}
	if c.Components.Popularity > 0 {
		fmt.Fprintf(&b, "; popular endpoint lowers the score (popularity %.2f)", c.Components.Popularity)
	}
	if provider != "" {
		fmt.Fprintf(&b, "; provider class %s lowers the score", provider)
	}
	if len(c.Intel) > 0 {
		fmt.Fprintf(&b, "; listed on threat intel: %s", strings.Join(c.Intel, ", "))
	}
	if c.Suppressed != "" {
		fmt.Fprintf(&b, "; suppressed by allowlist %s", c.Suppressed)
	}
	return b.String()
}

func level(v float64) string {
	switch {
	case v >= 0.9:
		return "very regular"
	case v >= 0.7:
		return "regular"
	case v >= 0.4:
		return "somewhat regular"
	}
	return "irregular"
}

// secs formats seconds compactly: "11.5 s", "2 min 5 s" style is avoided
// in favour of one unit.
func secs(s float64) string {
	switch {
	case s >= 3600:
		return strconv.FormatFloat(s/3600, 'f', 2, 64) + " h"
	case s >= 120:
		return strconv.FormatFloat(s/60, 'f', 1, 64) + " min"
	case s >= 10:
		return strconv.FormatFloat(s, 'f', 1, 64) + " s"
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " s"
}

// expire drops what the window starting at nextWs (absolute ms) no longer
// covers: pairs idle since before it, older samples, and subscribers and
// endpoints left without pairs (endpoints keep their popularity baseline
// while it is worth keeping). It also rebases stored times when needed.
func (d *Detector) expire(nextWs int64) {
	lo := d.offsetClamp(nextWs)
	for pi := range uint32(d.ps.n) {
		p := d.ps.at(pi)
		if p.flags&pairLive == 0 {
			continue
		}
		if p.last < lo {
			d.deletePair(pi)
			continue
		}
		if p.first < lo {
			// Pro-rate the counters to the part of the pair's life that
			// is still in the window.
			frac := float64(p.last-lo) / float64(max(1, p.last-p.first))
			p.flows = uint32(math.Ceil(float64(p.flows) * frac))
			p.bytes16 = uint32(float64(p.bytes16) * frac)
			p.first = lo
			s, z, u := d.samples(p)
			k := 0
			for k < len(s) && s[k] < lo {
				k++
			}
			if k > 0 {
				copy(s, s[k:])
				copy(z, z[k:])
				if u != nil {
					copy(u, u[k:])
				}
				p.n -= uint8(k)
			}
			if p.n > 0 {
				p.first = s[0]
			}
		}
	}
	for si := range d.subs {
		if s := &d.subs[si]; s.pairs == 0 && s.live {
			d.freeSub(uint32(si))
		}
	}
	keep := float32(d.cfg.PopularMinSubscribers) / 2
	decay := float32(math.Pow(0.5, d.cfg.Hop.Seconds()/d.cfg.PopularityHalfLife.Seconds()))
	for ei := range d.eps {
		ep := &d.eps[ei]
		if ep.key == (epKey{}) {
			continue // free slot
		}
		if ep.npairs == 0 && ep.hasBase {
			ep.baseline *= decay
		}
		if ep.npairs == 0 && (!ep.hasBase || ep.baseline < keep) {
			d.freeEndpoint(uint32(ei))
			continue
		}
		if ep.sk != nil && int(ep.npairs) <= d.cfg.FanInExact/2 {
			d.dropSketches(ep)
		}
	}
	if d.maxStart-d.base > maxOffset {
		d.rebase(nextWs - d.cfg.Hop.Milliseconds())
	}
}

// rebase moves the time origin forward to nb (absolute ms), which must be
// before every time still relevant.
func (d *Detector) rebase(nb int64) {
	delta := nb - d.base
	if delta <= 0 {
		return
	}
	sub := func(v uint32) uint32 {
		if int64(v) < delta {
			return 0
		}
		return uint32(int64(v) - delta)
	}
	for pi := range uint32(d.ps.n) {
		p := d.ps.at(pi)
		if p.flags&pairLive == 0 {
			continue
		}
		p.first, p.last = sub(p.first), sub(p.last)
		s, _, _ := d.samples(p)
		for i := range s {
			s[i] = sub(s[i])
		}
	}
	d.base = nb
}
