package detect

import (
	"math"
	"slices"
)

// This file holds the pure scoring functions: they see interval and size
// samples, never flows, state or configuration structs, so that each
// component can be tested on generated sequences.

// periodFit is the result of fitting a period to a set of inter-arrival
// gaps: every gap is read as a whole number of beats (k >= 1) plus a phase
// residual, so that missed beats and 1:N sampling, which turn gaps into
// multiples of the period, do not hide it.
type periodFit struct {
	// Period is the estimated period in seconds (0 when none was found).
	Period float64
	// Inliers is the fraction of gaps within the tolerance of k*Period.
	Inliers float64
	// MeanBeats is the mean k over the gaps (1 for an unsampled, unbroken
	// beacon; about N under 1:N sampling).
	MeanBeats float64
	// Comb is the candidate period with the best support. It is Period or
	// shorter: a divisor of it, or a finer comb that a beacon with several
	// intervals fits better (9 s and 14 s alternating fit 23/5 s).
	Comb float64
}

// fitScratch holds reusable buffers for the period search.
type fitScratch struct {
	sorted []float64
	cands  []float64
	resid  []float64
	tmp    []float64
	adj    []float64 // duration-adjusted idle times (scheduleTiming)
}

// fitPeriod estimates the period of gaps (seconds, any order, all > 0).
//
// Every gap g is read as k = max(1, round(g/P)) beats plus a phase residual
// r = g/P - k; it supports P when |r| <= tol. Gaps do not weigh the same:
// a gap of k beats counts 1/k. A gap of one or two beats tests the period
// precisely, while one spanning many beats (a missed beat, and under 1:N
// sampling about N of them) has accumulated the jitter of all of them and
// fits a wrong period about half the time by chance; the weights keep such
// gaps from outvoting the few short ones. The support of P is the weight
// of the gaps it explains over the weight of all gaps.
//
// Candidate periods are the smallest distinct gaps and the median gap
// divided by k = 1..maxK, and the median and central mean of the gaps
// (rate estimates). A period that would make the median gap span
// more than 4N beats under 1:N sampling (unsampled: more than 4, three
// missed beats in four) is not considered: it fits about half of any gaps
// by chance, since their residuals are then anything. Among the candidates whose support is within
// 0.15 of the best, the largest period wins: every divisor of the true
// period explains the gaps as well, so a shorter one must explain clearly
// more to be preferred (half-period artefacts, such as a retry midway
// through some intervals, do not). The winner is then refined to the
// interquartile mean of the per-gap estimates g/k. Periods outside [minP,
// maxP] are not considered.
func fitPeriod(gaps []float64, minP, maxP, tol float64, rate uint16, s *fitScratch) periodFit {
	n := len(gaps)
	if n == 0 {
		return periodFit{}
	}
	s.sorted = append(s.sorted[:0], gaps...)
	slices.Sort(s.sorted)
	q := func(p float64) float64 { return quantileSorted(s.sorted, p) }
	maxK := maxBeats(rate)
	minP = max(minP, q(0.5)/(maxMedianBeats*float64(max(1, rate))))
	s.cands = s.cands[:0]
	s.cands = append(s.cands, q(0.5), centralMean(s.sorted))
	addBase := func(b float64) {
		for k := 1; k <= maxK; k++ {
			c := b / float64(k)
			if c < minP {
				break
			}
			if c <= maxP {
				s.cands = append(s.cands, c)
			}
		}
	}
	// The smallest distinct gaps (more than the tolerance apart), then
	// the median.
	last := 0.0
	for i, picked := 0, 0; i < n && picked < smallBases; i++ {
		if g := s.sorted[i]; g > last*(1+tol) {
			addBase(g)
			last = g
			picked++
		}
	}
	addBase(q(0.5))
	slices.Sort(s.cands)
	// Drop near-duplicates (within 0.2%).
	w := 0
	for _, c := range s.cands {
		if c < minP || c > maxP || (w > 0 && c < s.cands[w-1]*1.002) {
			continue
		}
		s.cands[w] = c
		w++
	}
	s.cands = s.cands[:w]
	if w == 0 {
		return periodFit{}
	}
	// First pass: the best support; second: the largest period near it.
	s.resid = s.resid[:0] // supports, by candidate
	best := 0.0
	for _, c := range s.cands {
		sp := weightedSupport(s.sorted, c, tol)
		s.resid = append(s.resid, sp)
		best = max(best, sp)
	}
	if best <= 0 {
		return periodFit{}
	}
	slack := max(0.15, 1/float64(n))
	bestP, comb := 0.0, 0.0
	for i, c := range s.cands {
		if s.resid[i] >= best-slack {
			bestP = c
		}
		if s.resid[i] >= best {
			comb = c
		}
	}
	// Refine, twice: the interquartile mean of the per-gap estimates g/k
	// over every gap within a wide tolerance (1.6 tol) of k periods. The
	// wide tolerance keeps the refinement stable for two alternating
	// intervals (an inlier-only mean would drift to one of them); the
	// interquartile mean keeps a few slow intervals on one side (a slow
	// request) from pulling it, and for two alternating intervals it is
	// their mean.
	p := bestP
	for range 2 {
		s.tmp = s.tmp[:0]
		for _, g := range s.sorted {
			if k := beats(g, p); math.Abs(g/p-k) <= 1.6*tol {
				s.tmp = append(s.tmp, g/k)
			}
		}
		if len(s.tmp) == 0 {
			break
		}
		slices.Sort(s.tmp)
		np := centralMean(s.tmp)
		if np < minP || np > maxP {
			break
		}
		p = np
	}
	f := fitAt(s.sorted, p, tol)
	f.Comb = comb
	return f
}

// maxMedianBeats bounds the beats the median gap may span, per 1:N of
// sampling (see fitPeriod).
const maxMedianBeats = 4

// maxBeats bounds k in the candidate periods base/k: a few beats for
// unsampled data, more under sampling, where the smallest observed gaps
// span several.
func maxBeats(rate uint16) int { return min(64, 6+2*int(max(1, rate))) }

// invBeats[k] is 1/k, for the weights of weightedSupport (a division per
// gap and candidate is most of its cost).
var invBeats = func() (t [256]float64) {
	for k := 1; k < len(t); k++ {
		t[k] = 1 / float64(k)
	}
	return t
}()

// smallBases is the number of smallest distinct gaps whose fractions are
// candidate periods.
const smallBases = 6

// weightedSupport is the share of the gaps that period p explains, each
// gap of k beats weighing 1/k (see fitPeriod).
func weightedSupport(gaps []float64, p, tol float64) float64 {
	var in, all float64
	inv := 1 / p
	for _, g := range gaps {
		x := g * inv
		k := max(1, math.Floor(x+0.5))
		w := 1 / k
		if k < float64(len(invBeats)) {
			w = invBeats[int(k)]
		}
		all += w
		if math.Abs(x-k) < tol {
			in += w
		}
	}
	if all == 0 {
		return 0
	}
	return in / all
}

// beats is the number of periods p that gap g most likely spans (>= 1).
func beats(g, p float64) float64 { return max(1, math.Round(g/p)) }

// quantileSorted returns the p-quantile of sorted data (linear
// interpolation between order statistics).
func quantileSorted(s []float64, p float64) float64 {
	switch len(s) {
	case 0:
		return 0
	case 1:
		return s[0]
	}
	pos := p * float64(len(s)-1)
	i := int(pos)
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	f := pos - float64(i)
	return s[i]*(1-f) + s[i+1]*f
}

// centralMean is the mean of the central half (25%..75%) of sorted data.
func centralMean(s []float64) float64 {
	lo, hi := len(s)/4, len(s)-len(s)/4
	if hi <= lo {
		lo, hi = 0, len(s)
	}
	var sum float64
	for _, v := range s[lo:hi] {
		sum += v
	}
	return sum / float64(hi-lo)
}

// bowley returns the Bowley (quartile) skewness of sorted data, in
// [-1, 1]. As in RITA, it is 0 when the quartile spread is negligible
// (below minSpread) or the median coincides with a quartile (here: within
// 5% of the quartile spread), because then at least a quarter of the mass
// is a spike at the median: a regular shape, or two alternating values
// (a connection and its retry), not a skewed one.
func bowley(sorted []float64, minSpread float64) float64 {
	if len(sorted) < 3 {
		return 0
	}
	q1, q2, q3 := quantileSorted(sorted, 0.25), quantileSorted(sorted, 0.5), quantileSorted(sorted, 0.75)
	den := q3 - q1
	if den < minSpread || q2-q1 <= 0.05*den || q3-q2 <= 0.05*den {
		return 0
	}
	return max(-1, min(1, (q1+q3-2*q2)/den))
}

// mad returns the median and the median absolute deviation of data, using
// tmp as scratch. data need not be sorted and is not modified.
func mad(data []float64, tmp *[]float64) (median, dev float64) {
	if len(data) == 0 {
		return 0, 0
	}
	*tmp = append((*tmp)[:0], data...)
	slices.Sort(*tmp)
	median = quantileSorted(*tmp, 0.5)
	for i, v := range *tmp {
		(*tmp)[i] = math.Abs(v - median)
	}
	slices.Sort(*tmp)
	return median, quantileSorted(*tmp, 0.5)
}

// timing holds the interval components of a beacon score.
type timing struct {
	fit periodFit
	// Jitter is the mean absolute deviation of the gaps from whole
	// numbers of periods, in seconds.
	Jitter float64
	// Skew, MADM and Period are components in [0,1] (1 = regular).
	Skew, MADM, Period float64
	// Comb is the finer comb period (fit.Comb) the components were
	// measured at, when it showed more regularity than fit.Period; 0
	// otherwise.
	Comb float64
}

// value is the timing part of the beacon score: the period fit weighs
// most (the share of intervals that are whole numbers of periods, beyond
// chance), then the interval dispersion, then skew (a weak signal: a
// Poisson process is nearly symmetric in quartiles too).
func (t timing) value() float64 { return 0.1*t.Skew + 0.3*t.MADM + 0.6*t.Period }

// nullDispersion is the dispersion D (see scoreTiming) of the phase
// residuals that a Poisson process shows when its gaps are folded onto the
// best-fitting period, by the mean number of beats per gap: about 0.33
// when gaps span one or two beats, falling to 0.25 (a uniform residual)
// when they span many, as under heavy sampling. (Measured on 200,000
// exponential gaps; see docs/detection.md.)
func nullDispersion(meanBeats float64) float64 {
	return 0.25 + 0.08*min(1, (2.5/meanBeats)*(2.5/meanBeats))
}

// scoreTiming scores the regularity of gaps (seconds) around fit; tol is
// the inlier tolerance the fit used and rate the 1:N sampling rate the
// gaps were observed under.
//
// Each gap becomes a phase residual r = g/P - k in periods. Jitter is D,
// the interquartile mean of |r - median(r)| (the mean of its central half),
// in seconds: robust to a quarter of odd intervals (a long sleep, a retry),
// and not 0 for a beacon with two alternating intervals.
//
// The dispersion component (MADM) is RITA's for unsampled gaps: 1 -
// MAD/median of the raw intervals. Under sampling, raw intervals are
// multiples of the period and their MAD says nothing, so it is 1 - D/D0
// with D0 the dispersion of a Poisson process at the same mean number of
// beats per gap (nullDispersion): "more regular than chance at this
// sampling rate".
//
// The period component is the fraction of gaps within tol of a whole
// number of periods beyond what the best period of the search reaches on
// random gaps (searchChance), rescaled to [0,1]. Skew is 1 - |Bowley skew| of the
// residuals.
//
// When the gaps fit a finer comb better than the period (fit.Comb: a
// beacon with alternating intervals, such as NjRAT's 9 s and 14 s, is
// regular on 23/5 s rather than on its mean interval of 11.5 s, and under
// sampling only that regularity survives in gaps of many beats), the
// components are those of the comb if they are higher. The comb is a
// candidate of the same search, so this costs no more chance fits than
// the search itself.
func scoreTiming(gaps []float64, fit periodFit, tol float64, rate uint16, s *fitScratch) timing {
	t := timingAt(gaps, fit, tol, rate, s)
	if fit.Comb > 0 && fit.Comb < 0.98*fit.Period {
		// The components at the finer comb, when they show more
		// regularity; the period and jitter stay those of fit.
		c := timingAt(gaps, fitAt(gaps, fit.Comb, tol), tol, rate, s)
		if c.value() > t.value() {
			t.Skew, t.MADM, t.Period, t.Comb = c.Skew, c.MADM, c.Period, fit.Comb
		}
	}
	return t
}

// timingAt computes the timing components at fit.Period.
func timingAt(gaps []float64, fit periodFit, tol float64, rate uint16, s *fitScratch) timing {
	t := timing{fit: fit}
	if fit.Period <= 0 || len(gaps) == 0 {
		return t
	}
	p := fit.Period
	// Residuals offset by one period, so that for single-beat gaps the
	// values are the gaps in periods.
	s.resid = s.resid[:0]
	for _, g := range gaps {
		s.resid = append(s.resid, 1+g/p-beats(g, p))
	}
	slices.Sort(s.resid)
	med := quantileSorted(s.resid, 0.5)
	s.tmp = s.tmp[:0]
	for _, r := range s.resid {
		s.tmp = append(s.tmp, math.Abs(r-med))
	}
	slices.Sort(s.tmp)
	d := centralMean(s.tmp)
	t.Jitter = d * p
	if rate <= 1 {
		m, dev := mad(gaps, &s.tmp)
		if m > 0 {
			t.MADM = clamp01((m - dev) / m)
		}
	} else {
		t.MADM = clamp01(1 - d/nullDispersion(fit.MeanBeats))
	}
	// Spreads below 2% of a period are measurement noise (timestamps in
	// ms, export jitter): no skew.
	t.Skew = 1 - math.Abs(bowley(s.resid, 0.02))
	chance := searchChance(gaps, fit.Period, rate, tol)
	t.Period = clamp01((fit.Inliers - chance) / (1 - chance))
	return t
}

// searchChance is the share of gaps that the best period of the search
// explains when the gaps are random (a Poisson process): the period
// component counts only the fit beyond it.
//
// For exponential gaps of mean m, a fixed period P = x*m explains a gap
// (within tol of k >= 1 periods) with probability
//
//	c = 2 sinh(tol x) e^-x / (1 - e^-x)
//
// about 0.29 when gaps are single beats (x = 1) and 2*tol when they span
// many (x -> 0, as under sampling). The search tries many periods, and
// the best of m independent tries exceeds c by about z = sqrt(2 ln m)
// standard errors, sqrt(c(1-c)/n). Periods apart by more than 2*tol/k
// give independent residuals for gaps of k beats, so a search over a range
// of periods of logarithmic width L holds about m = L*k/(2*tol)
// independent tries: a few when gaps are single beats, hundreds under
// heavy sampling, where gaps span about N beats and L grows with log N
// (see maxMedianBeats). Without the correction, a dozen random gaps under
// 1:100 sampling look like a beacon.
func searchChance(gaps []float64, p float64, rate uint16, tol float64) float64 {
	n := len(gaps)
	if n == 0 || p <= 0 {
		return 1
	}
	var sum float64
	for _, g := range gaps {
		sum += g
	}
	x := p / (sum / float64(n))
	c := 2 * tol
	if x > 1e-6 {
		c = min(c, 2*math.Sinh(tol*x)*math.Exp(-x)/(-math.Expm1(-x)))
	}
	l := 1 + math.Log(maxMedianBeats*float64(max(1, rate)))
	m := max(2, l*max(1, 1/x)/(2*tol))
	z := math.Sqrt(2 * math.Log(m))
	return min(1, c+z*math.Sqrt(c*(1-c)/float64(n)))
}

// sizeScore scores flow sizes (bytes) like RITA's data size score: the
// mean of 1-|Bowley skew|, 1-MAD/median and smallness, 1-median/65535
// (check-ins are small; a large periodic transfer is more likely a feed or
// camera refresh). A median below 1 byte (empty flows) is regular.
func sizeScore(sizes []float64, s *fitScratch) float64 {
	if len(sizes) < 3 {
		return 0
	}
	s.tmp = append(s.tmp[:0], sizes...)
	slices.Sort(s.tmp)
	sk := 1 - math.Abs(bowley(s.tmp, 1))
	med, dev := mad(sizes, &s.resid)
	m := 1.0
	if med >= 1 {
		m = clamp01((med - dev) / med)
	}
	small := clamp01(1 - med/65535)
	return (sk + m + small) / 3
}

// countScore says whether there are enough intervals to trust the other
// components: 0 below minGaps, rising to 1 at fullGaps.
func countScore(gaps, minGaps, fullGaps int) float64 {
	if gaps < minGaps {
		return 0
	}
	if fullGaps <= minGaps {
		return 1
	}
	return clamp01(float64(gaps-minGaps+1) / float64(fullGaps-minGaps+1))
}

func clamp01(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return max(0, min(1, v))
}

// A beacon's schedule is one of two kinds, and the timing is measured on
// the gaps that show it:
//
//   - A timer starts a connection every P seconds, however long each one
//     lasts: the gaps between connection starts are regular.
//   - A sleep loop (check in, then sleep S; Cobalt Strike, Empire, a curl
//     or wget loop) starts the next connection S seconds after the
//     previous one ended: the idle times between connections are
//     regular, and each start-to-start gap is S plus the time the
//     previous request took, so that variable request times add to it as
//     noise.
//
// With flow end times both series are at hand: the start gaps g_i and the
// idle times g_i - d_i (d_i the duration of connection i). The idle model
// compares them on one scale: it adds the median duration d~ back to
// every idle time, h_i = g_i - d_i + d~, which is the start gap with the
// previous request's duration replaced by the typical one. A sleep loop's
// h_i are whole numbers of cycles S + d~ (a gap with a missed connection
// is 2S + d + d~, about two cycles, where the idle time alone, 2S + d, is
// skewed by the missed request), and its sleep is the fitted cycle less
// d~. When durations vary, only the series the bot follows is regular;
// when they do not, h_i are the start gaps, and the start gaps are kept
// (the period keeps the start-to-start meaning it always had).

// maxIdleDuty bounds the median connection duration, relative to the
// median idle time, for the idle times to be read as a sleep loop. A
// check-in is short compared with the sleep that follows it (the Slips
// curl loop: 0.18 s and 2.02 s; Ares: 0.08 s and 10 s); a connection that
// is open for much of the cycle is a session (long polling, streaming),
// whose reconnects are not a beacon's schedule.
const maxIdleDuty = 0.25

// idleGain is how much more regular (jitter, in seconds, on the same
// cycle scale) the idle times must be than the start gaps for the idle
// model to be chosen.
const idleGain = 0.5

// idleSlack is how much lower the timing value of the idle times may be
// than that of the start gaps when preferIdle chooses them.
const idleSlack = 0.05

// idleApplicable says whether idle times (seconds, as from idleGapsOf)
// can carry a sleep loop's schedule: at least minGaps of them, from at
// least 3/4 of the gaps whose previous connection's end was known (the
// rest overlapped the next connection: long-lived connections make the
// model inapplicable), and connections short against the idle time (median
// duration at most maxIdleDuty of the median idle time). durs are the
// durations matching idle; tmp is scratch. It returns the median duration
// too.
func idleApplicable(idle, durs []float64, known, minGaps int, tmp *[]float64) (bool, float64) {
	if len(idle) < max(2, minGaps) || 4*len(idle) < 3*known {
		return false, 0
	}
	mi, _ := mad(idle, tmp)
	md, _ := mad(durs, tmp)
	return mi > 0 && md <= maxIdleDuty*mi, md
}

// preferIdle says whether the timing of the duration-adjusted idle times
// (idle) shows the schedule rather than that of the start gaps (start),
// both on the cycle scale:
//
//   - its jitter is below idleGain times the start gaps';
//   - it reads the gaps as no more beats than the start gaps do (mean
//     beats per gap within 10%): the same connections follow each other
//     in both series, so a sleep loop's idle times span as many sleeps as
//     its start gaps span cycles. A period that needs more beats is a finer
//     comb that irregular idle times fit by chance (NjRAT's idle times of 6
//     and 14 s);
//   - its timing value is at least theirs less idleSlack: the components
//     (the share of gaps that fit, beyond chance; dispersion; skew) are
//     estimates too, and the jitter is the criterion, but a model whose
//     timing scores clearly lower is not the better description.
//
// For random connections the two series differ only by the durations and
// are about equally irregular, so this second try rarely wins.
func preferIdle(start, idle timing) bool {
	if idle.fit.Period <= 0 {
		return false
	}
	if start.fit.Period <= 0 {
		return idle.value() > start.value()
	}
	return idle.Jitter < idleGain*start.Jitter &&
		idle.fit.MeanBeats <= 1.1*start.fit.MeanBeats &&
		idle.value() >= start.value()-idleSlack
}

// schedule is the timing of a pair or an endpoint, measured on the series
// that shows its schedule.
type schedule struct {
	tm timing
	// idle says that tm was measured on the idle times between
	// connections (a sleep loop): tm.fit.Period is the sleep, and dur
	// the median connection duration that was added back to compare
	// them with the start gaps (the cycle is about sleep + dur; tm.Comb,
	// when set, is on that scale).
	idle bool
	dur  float64
	// cycle is the start-to-start period.
	cycle float64
}

// onCycle is the fitted period on the start-to-start scale: the sleep plus
// the median duration for a sleep loop, the period otherwise. Periods of
// pairs measured on different series are compared on it.
func (s schedule) onCycle() float64 { return s.tm.fit.Period + s.dur }

// scheduleTiming fits and scores the start gaps of a pair (or of an
// endpoint's pooled pairs) and, unsampled and when idleApplicable, the
// idle times between its connections (idle, with the durations durs of the
// connections before them and known, as from idleGapsOf), and returns the
// timing of the series preferIdle picks. Under 1:N sampling, consecutive
// observed connections are k beats apart and the idle time between them,
// k sleeps and k-1 unobserved requests, says no more than the start gap:
// only the start gaps are used.
func scheduleTiming(gaps, idle, durs []float64, known, minGaps int, minP, maxP, tol float64, rate uint16, s *fitScratch) schedule {
	fit := fitPeriod(gaps, minP, maxP, tol, rate, s)
	sc := schedule{tm: scoreTiming(gaps, fit, tol, rate, s), cycle: fit.Period}
	if rate > 1 {
		return sc
	}
	ok, dur := idleApplicable(idle, durs, known, minGaps, &s.tmp)
	if !ok {
		return sc
	}
	s.adj = s.adj[:0]
	for _, g := range idle {
		s.adj = append(s.adj, g+dur)
	}
	ifit := fitPeriod(s.adj, minP, maxP, tol, 1, s)
	itm := scoreTiming(s.adj, ifit, tol, 1, s)
	if !preferIdle(sc.tm, itm) || ifit.Period-dur < minP {
		return sc
	}
	itm.fit.Period -= dur
	return schedule{tm: itm, idle: true, dur: dur, cycle: sc.cycle}
}
