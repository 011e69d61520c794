package detect

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Generated connection-start sequences (seconds) for the score tests.
type sequence struct {
	name    string
	gen     func(r *rand.Rand) []float64
	period  float64 // true period, 0 when there is none
	sampled int     // 1:N thinning applied after generation
}

const (
	genPeriod = 30.0
	genN      = 120 // connections over one hour
	genSpan   = genN * genPeriod
)

func perfect(r *rand.Rand) []float64 {
	ts := make([]float64, genN)
	for i := range ts {
		ts[i] = float64(i) * genPeriod
	}
	return ts
}

// jittered beacons sleep period*(1±j) after each connection, so the
// jitter accumulates (a "sleep P; connect" loop).
func jittered(j float64) func(*rand.Rand) []float64 {
	return func(r *rand.Rand) []float64 {
		ts := make([]float64, genN)
		t := 0.0
		for i := range ts {
			ts[i] = t
			t += genPeriod * (1 + j*(2*r.Float64()-1))
		}
		return ts
	}
}

// missed drops each beat with probability p.
func missed(p float64) func(*rand.Rand) []float64 {
	return func(r *rand.Rand) []float64 {
		var ts []float64
		for i := 0; len(ts) < genN; i++ {
			if r.Float64() >= p {
				ts = append(ts, float64(i)*genPeriod)
			}
		}
		return ts
	}
}

func poisson(r *rand.Rand) []float64 {
	ts := make([]float64, genN)
	t := 0.0
	for i := range ts {
		ts[i] = t
		t += r.ExpFloat64() * genPeriod
	}
	return ts
}

// burst is 40 connections in two minutes (a page load, a download in
// parts), then silence for the rest of the hour.
func burst(r *rand.Rand) []float64 {
	ts := make([]float64, 40)
	t := 0.0
	for i := range ts {
		ts[i] = t
		t += 1 + 5*r.Float64()
	}
	return ts
}

// alternating is a beacon whose connections alternate 9 s and 14 s apart
// (NjRAT: a connect, its retry, a pause) for an hour; its mean interval is
// 11.5 s.
func alternating(*rand.Rand) []float64 {
	var ts []float64
	for t, i := 0.0, 0; t < genSpan; i++ {
		ts = append(ts, t)
		if i%2 == 0 {
			t += 9
		} else {
			t += 14
		}
	}
	return ts
}

func thinned(ts []float64, n int, r *rand.Rand) []float64 {
	if n <= 1 {
		return ts
	}
	var out []float64
	for _, t := range ts {
		if r.IntN(n) == 0 {
			out = append(out, t)
		}
	}
	return out
}

// components scores a sequence as the detector scores a pair: gaps of
// its last 64 connections, sizes all equal, coverage over one hour.
type scored struct {
	fit   periodFit
	tm    timing
	count float64
	cov   float64
	score float64
}

func scoreSeq(ts []float64, rate int) scored {
	var cov float64
	if len(ts) > 1 {
		cov = clamp01((ts[len(ts)-1] - ts[0]) / math.Max(genSpan, ts[len(ts)-1]-ts[0]))
	}
	if len(ts) > 64 {
		ts = ts[len(ts)-64:]
	}
	var gaps []float64
	for i := 1; i < len(ts); i++ {
		gaps = append(gaps, ts[i]-ts[i-1])
	}
	var s fitScratch
	cfg := DefaultConfig()
	fit := fitPeriod(gaps, 1, 6*3600, cfg.PeriodTolerance, uint16(rate), &s)
	tm := scoreTiming(gaps, fit, cfg.PeriodTolerance, uint16(rate), &s)
	full := max(cfg.MinConnections-1, int(math.Round(float64(cfg.FullConnections-1)/math.Sqrt(float64(rate)))))
	out := scored{fit: fit, tm: tm, count: countScore(len(gaps), cfg.MinConnections-1, full), cov: cov}
	out.score = beaconScore(tm, 1, out.count, out.cov)
	return out
}

// TestScoreComponents checks every component on generated sequences, ten
// seeds each: the period estimate, interval dispersion (MADM), skew,
// period confidence, count and coverage, and the pair beacon score.
func TestScoreComponents(t *testing.T) {
	type want struct {
		periodErr          float64 // max relative period error (0: not checked)
		minScore, maxScore float64
		minMADM, maxMADM   float64
		minPeriod          float64 // period confidence
		maxCoverage        float64
	}
	for _, tc := range []struct {
		seq  sequence
		want want
	}{
		{sequence{name: "perfect", gen: perfect, period: genPeriod, sampled: 1}, want{periodErr: 0.001, minScore: 0.95, maxScore: 1, minMADM: 0.99, maxMADM: 1, minPeriod: 0.99, maxCoverage: 1}},
		{sequence{name: "jitter 10%", gen: jittered(0.1), period: genPeriod, sampled: 1}, want{periodErr: 0.03, minScore: 0.85, maxScore: 1, minMADM: 0.9, maxMADM: 1, minPeriod: 0.9, maxCoverage: 1}},
		{sequence{name: "jitter 30%", gen: jittered(0.3), period: genPeriod, sampled: 1}, want{periodErr: 0.1, minScore: 0.65, maxScore: 0.95, minMADM: 0.75, maxMADM: 0.95, minPeriod: 0.5, maxCoverage: 1}},
		// Unsampled, MADM is RITA's MAD/median of the raw intervals, which
		// missed beats lower (to 0.5 when fewer than half the intervals
		// are single beats); the period fit is unaffected.
		{sequence{name: "missed 50%", gen: missed(0.5), period: genPeriod, sampled: 1}, want{periodErr: 0.001, minScore: 0.8, maxScore: 1, minMADM: 0.4, maxMADM: 1, minPeriod: 0.99, maxCoverage: 1}},
		// Two alternating intervals: RITA's MAD is 0 (half the intervals
		// are at the median), so MADM is high; jitter reports the spread.
		{sequence{name: "alternating 9/14 s", gen: alternating, period: 11.5, sampled: 1}, want{periodErr: 0.05, minScore: 0.75, maxScore: 1, minMADM: 0.7, maxMADM: 1, minPeriod: 0.9, maxCoverage: 1}},
		{sequence{name: "poisson", gen: poisson, sampled: 1}, want{minScore: 0, maxScore: 0.35, minMADM: 0, maxMADM: 0.5, maxCoverage: 1}},
		{sequence{name: "burst", gen: burst, sampled: 1}, want{minScore: 0, maxScore: 0.1, minMADM: 0, maxMADM: 1, maxCoverage: 0.1}},
		{sequence{name: "perfect 1:10", gen: perfect, period: genPeriod, sampled: 10}, want{periodErr: 0.001, minScore: 0, maxScore: 1, minMADM: 0.99, maxMADM: 1, minPeriod: 0.99, maxCoverage: 1}},
		{sequence{name: "missed 50% 1:10", gen: missed(0.5), period: genPeriod, sampled: 10}, want{periodErr: 0.001, minScore: 0, maxScore: 1, minMADM: 0.99, maxMADM: 1, minPeriod: 0.9, maxCoverage: 1}},
		{sequence{name: "poisson 1:10", gen: poisson, sampled: 10}, want{minScore: 0, maxScore: 0.4, minMADM: 0, maxMADM: 0.45, maxCoverage: 1}},
	} {
		t.Run(tc.seq.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 10; seed++ {
				r := rand.New(rand.NewPCG(seed, 7))
				ts := tc.seq.gen(r)
				if tc.seq.sampled > 1 {
					// A 1:N sampled beacon N times as long, so that the
					// thinned sequence still has about 120 connections:
					// N runs back to back, each starting one period after
					// the last connection of the previous one.
					long := make([]float64, 0, genN*tc.seq.sampled)
					for k := 0; k < tc.seq.sampled; k++ {
						shift := 0.0
						if len(long) > 0 {
							shift = long[len(long)-1] + genPeriod
						}
						for _, v := range tc.seq.gen(r) {
							long = append(long, v+shift)
						}
					}
					ts = thinned(long, tc.seq.sampled, r)
				}
				s := scoreSeq(ts, tc.seq.sampled)
				w := tc.want
				if w.periodErr > 0 && math.Abs(s.fit.Period-tc.seq.period) > w.periodErr*tc.seq.period {
					t.Errorf("seed %d: period %.3f, want %.3f ± %.0f%%", seed, s.fit.Period, tc.seq.period, 100*w.periodErr)
				}
				if tc.seq.sampled == 1 && (s.score < w.minScore || s.score > w.maxScore) {
					t.Errorf("seed %d: beacon score %.3f, want [%.2f, %.2f] (%+v)", seed, s.score, w.minScore, w.maxScore, s)
				}
				if s.tm.MADM < w.minMADM || s.tm.MADM > w.maxMADM {
					t.Errorf("seed %d: MADM %.3f, want [%.2f, %.2f]", seed, s.tm.MADM, w.minMADM, w.maxMADM)
				}
				if s.tm.Period < w.minPeriod {
					t.Errorf("seed %d: period confidence %.3f, want >= %.2f (%+v)", seed, s.tm.Period, w.minPeriod, s)
				}
				if s.cov > w.maxCoverage {
					t.Errorf("seed %d: coverage %.3f, want <= %.2f", seed, s.cov, w.maxCoverage)
				}
				for name, v := range map[string]float64{"skew": s.tm.Skew, "madm": s.tm.MADM, "period": s.tm.Period, "count": s.count, "score": s.score} {
					if v < 0 || v > 1 || math.IsNaN(v) {
						t.Errorf("seed %d: %s = %v outside [0,1]", seed, name, v)
					}
				}
			}
		})
	}
}

func TestFitPeriodSampledEstimate(t *testing.T) {
	// Under 1:N sampling observed gaps are multiples of the period; the
	// estimator still finds it, for N up to 30.
	for _, n := range []int{2, 5, 10, 30} {
		r := rand.New(rand.NewPCG(uint64(n), 9))
		var ts []float64
		for i := 0; len(ts) < 64; i++ {
			if r.IntN(n) == 0 {
				ts = append(ts, float64(i)*genPeriod+0.02*r.NormFloat64())
			}
		}
		s := scoreSeq(ts, n)
		if math.Abs(s.fit.Period-genPeriod) > 0.01*genPeriod {
			t.Errorf("1:%d: period %.3f, want %.1f", n, s.fit.Period, genPeriod)
		}
		if s.fit.MeanBeats < float64(n)/3 {
			t.Errorf("1:%d: mean beats per gap %.1f, want about %d", n, s.fit.MeanBeats, n)
		}
	}
}

func TestSizeScore(t *testing.T) {
	var s fitScratch
	for _, tc := range []struct {
		name     string
		sizes    []float64
		min, max float64
	}{
		{"constant small", []float64{324, 324, 324, 324, 324, 324}, 0.99, 1},
		{"empty flows", []float64{0, 0, 0, 0}, 1, 1},
		{"two alternating", []float64{104, 52, 104, 52, 104, 52, 104}, 0.9, 1},
		{"large constant", []float64{105000, 105000, 104000, 105500}, 0.5, 0.7},
		{"spread", []float64{40, 9000, 120, 35000, 600, 2, 18000, 77}, 0, 0.7},
		{"too few", []float64{1, 1}, 0, 0},
	} {
		if got := sizeScore(tc.sizes, &s); got < tc.min || got > tc.max {
			t.Errorf("%s: size score %.3f, want [%.2f, %.2f]", tc.name, got, tc.min, tc.max)
		}
	}
}

func TestCountAndBowley(t *testing.T) {
	for _, tc := range []struct{ gaps, min, full int }{{4, 5, 63}, {5, 5, 63}, {34, 5, 63}, {63, 5, 63}, {100, 5, 63}} {
		got := countScore(tc.gaps, tc.min, tc.full)
		want := 0.0
		if tc.gaps >= tc.min {
			want = math.Min(1, float64(tc.gaps-tc.min+1)/float64(tc.full-tc.min+1))
		}
		if got != want {
			t.Errorf("countScore(%d) = %v, want %v", tc.gaps, got, want)
		}
	}
	if b := bowley([]float64{1, 2, 3, 4, 100, 200, 300, 400}, 0); b <= 0 {
		t.Errorf("right-skewed data: Bowley %v, want > 0", b)
	}
	if b := bowley([]float64{9, 9, 9, 9.001, 14, 14, 14}, 0.02); b != 0 {
		t.Errorf("two alternating values: Bowley %v, want 0", b)
	}
}

func TestSizeEncoding(t *testing.T) {
	for _, b := range []uint64{0, 1, 32767, 32768, 65535, 105060, 1 << 30, 1 << 40} {
		got := decodeSize(encodeSize(b))
		if math.Abs(got-float64(b)) > 0.001*float64(b) {
			t.Errorf("size %d decodes as %v", b, got)
		}
	}
	if encodeSize(math.MaxUint64) != 0xffff {
		t.Error("huge sizes do not saturate")
	}
}

// TestPairSize pins the pair's size: the memory target (128 bytes per
// tracked pair, see BenchmarkMemory) depends on it.
func TestPairSize(t *testing.T) {
	if pairBytes != 64 {
		t.Errorf("pair is %d bytes, want 64", pairBytes)
	}
}

// TestFitPeriodSampledJitter: under 1:N sampling a gap spans about N
// beats and has accumulated their jitter; the estimator still finds the
// period of a "sleep P ± 10%" beacon, and the mean interval of a beacon
// alternating 9 s and 14 s (NjRAT), in at least 9 of 10 seeds. (Before
// gaps were weighted by 1/beats, the alternating beacon got its mean
// interval in only 5 and 7 of 10 seeds at 1:2 and 1:10, and 4.6 s, the
// comb 9 and 14 s nearly fit, otherwise.)
func TestFitPeriodSampledJitter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gen    func(r *rand.Rand) []float64
		period float64
		tol    float64
	}{
		{"jitter 10%", jittered(0.1), genPeriod, 0.05},
		{"alternating 9/14 s", alternating, 11.5, 0.1},
	} {
		for _, n := range []int{2, 5, 10} {
			ok := 0
			var got []float64
			for seed := uint64(1); seed <= 10; seed++ {
				r := rand.New(rand.NewPCG(seed, 31))
				var ts []float64
				for len(ts) < 64 {
					shift := 0.0
					if len(ts) > 0 {
						shift = ts[len(ts)-1] + tc.period
					}
					for _, v := range thinned(tc.gen(r), n, r) {
						ts = append(ts, v+shift)
					}
				}
				s := scoreSeq(ts[:64], n)
				got = append(got, s.fit.Period)
				if math.Abs(s.fit.Period-tc.period) <= tc.tol*tc.period {
					ok++
				}
			}
			if ok < 9 {
				t.Errorf("%s 1:%d: period within %.0f%% of %.1f s in %d of 10 seeds: %.1f", tc.name, n, 100*tc.tol, tc.period, ok, got)
			}
		}
	}
}

// conns are generated connections: start times and durations (seconds).
type conns struct{ starts, durs []float64 }

// sleepLoop is a "check in; sleep genPeriod*(1±j)" loop: each connection
// starts when the previous one has ended and the sleep has passed; dur
// draws each connection's duration.
func sleepLoop(j float64, dur func(*rand.Rand) float64) func(*rand.Rand) conns {
	return func(r *rand.Rand) conns {
		var c conns
		t := 0.0
		for range genN {
			d := dur(r)
			c.starts, c.durs = append(c.starts, t), append(c.durs, d)
			t += d + genPeriod*(1+j*(2*r.Float64()-1))
		}
		return c
	}
}

// timer starts a connection every genPeriod (±j, not accumulating),
// however long each lasts.
func timer(j float64, dur func(*rand.Rand) float64) func(*rand.Rand) conns {
	return func(r *rand.Rand) conns {
		var c conns
		for i := range genN {
			c.starts = append(c.starts, (float64(i)+j*(2*r.Float64()-1))*genPeriod)
			c.durs = append(c.durs, dur(r))
		}
		return c
	}
}

// slowRequests: most requests take 0.15-0.25 s, 15% take 2-6 s (the
// Slips capture: 0.17-0.2 s, 14% slow).
func slowRequests(r *rand.Rand) float64 {
	if r.Float64() < 0.15 {
		return 2 + 4*r.Float64()
	}
	return 0.15 + 0.1*r.Float64()
}

func uniformDur(r *rand.Rand) float64 { return 0.1 + 5.9*r.Float64() }
func constDur(*rand.Rand) float64     { return 0.2 }

// longPoll holds each connection open 20-40 s (until the server has
// news), then reconnects after a fixed 2 s pause.
func longPoll(r *rand.Rand) conns {
	var c conns
	t := 0.0
	for range genN {
		d := 20 + 20*r.Float64()
		c.starts, c.durs = append(c.starts, t), append(c.durs, d)
		t += d + 2
	}
	return c
}

func poissonConns(r *rand.Rand) conns {
	var c conns
	t := 0.0
	for range genN {
		c.starts, c.durs = append(c.starts, t), append(c.durs, uniformDur(r))
		t += r.ExpFloat64() * genPeriod
	}
	return c
}

// dropped drops each connection with probability p (the bot skipped a
// check-in, or the exporter lost the flow).
func dropped(p float64, gen func(*rand.Rand) conns) func(*rand.Rand) conns {
	return func(r *rand.Rand) conns {
		c := gen(r)
		var out conns
		for i := range c.starts {
			if r.Float64() >= p {
				out.starts, out.durs = append(out.starts, c.starts[i]), append(out.durs, c.durs[i])
			}
		}
		return out
	}
}

// scoreConns scores connections as the detector scores an unsampled pair
// (its last 64 connections, sizes all equal, coverage over one hour), with
// the choice between start gaps and idle times of scheduleTiming.
func scoreConns(c conns) (tm timing, idle bool, cycle, score float64) {
	if n := len(c.starts); n > 64 {
		c.starts, c.durs = c.starts[n-64:], c.durs[n-64:]
	}
	starts := make([]uint32, len(c.starts))
	ends := make([]int64, len(c.starts))
	for i, t := range c.starts {
		starts[i] = uint32(math.Round(t * 1000))
		ends[i] = int64(starts[i]) + int64(math.Round(c.durs[i]*1000))
	}
	gaps := gapsOf(starts, nil)
	idleGaps, durs, known := idleGapsOf(starts, ends, -1, nil, nil)
	cfg := DefaultConfig()
	var s fitScratch
	sc := scheduleTiming(gaps, idleGaps, durs, known, cfg.MinConnections-1, 1, 6*3600, cfg.PeriodTolerance, 1, &s)
	tm, idle, cycle = sc.tm, sc.idle, sc.cycle
	count := countScore(len(gaps), cfg.MinConnections-1, cfg.FullConnections-1)
	return tm, idle, cycle, beaconScore(tm, 1, count, 1)
}

// TestScheduleTiming: a sleep loop whose requests take variable time has
// regular idle times between connections and irregular start gaps; a timer
// whose connections last variable time has regular start gaps and
// irregular idle times. Each is measured on the series that shows its
// schedule and reports it: the sleep for the loop, the timer's period
// for the timer (ten seeds each). Where the series are about equally
// regular (constant durations, large sleep jitter) the start gaps are
// kept, and so they are where the idle model does not apply (long-lived
// connections) and for random connections.
func TestScheduleTiming(t *testing.T) {
	const either = 2
	for _, tc := range []struct {
		name      string
		gen       func(*rand.Rand) conns
		idle      int     // 1: idle times, 0: start gaps, either
		period    float64 // want; 0: random, the score must stay low
		periodErr float64
	}{
		// The Slips curl loop: the sleep is precise (0.5 ms), requests
		// take 0.15-0.25 s and some much longer.
		{"sleep loop, slow requests", sleepLoop(0.0001, slowRequests), 1, genPeriod, 0.001},
		// A sleep jitter of ±0.3 s hides the variation of the fast
		// requests, and the slow ones are too few (15%) to move a robust
		// dispersion: either series will do, and the start gaps, kept,
		// give the sleep plus a typical request.
		{"sleep loop ±1%, slow requests", sleepLoop(0.01, slowRequests), either, genPeriod, 0.01},
		{"sleep loop, durations 0.1-6 s", sleepLoop(0.01, uniformDur), 1, genPeriod, 0.01},
		{"sleep loop, 0.1-6 s, 30% dropped", dropped(0.3, sleepLoop(0.01, uniformDur)), 1, genPeriod, 0.02},
		{"sleep loop ±10%, slow requests", sleepLoop(0.1, slowRequests), either, genPeriod, 0.05},
		// Constant durations: both series are as regular in seconds, the
		// start gaps relatively more; the period is the cycle, sleep +
		// request.
		{"sleep loop, constant durations", sleepLoop(0.01, constDur), 0, genPeriod + 0.2, 0.01},
		{"timer, durations 0.1-6 s", timer(0.005, uniformDur), 0, genPeriod, 0.005},
		{"timer, slow requests", timer(0.005, slowRequests), 0, genPeriod, 0.005},
		{"timer, 0.1-6 s, 30% dropped", dropped(0.3, timer(0.005, uniformDur)), 0, genPeriod, 0.005},
		{"long polling", longPoll, 0, 0, 0},
		{"poisson, durations 0.1-6 s", poissonConns, either, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 10; seed++ {
				r := rand.New(rand.NewPCG(seed, 11))
				tm, idle, cycle, score := scoreConns(tc.gen(r))
				if tc.idle != either && idle != (tc.idle == 1) {
					t.Errorf("seed %d: idle model %v, want %v (period %.3f, cycle %.3f)", seed, idle, tc.idle == 1, tm.fit.Period, cycle)
				}
				switch {
				case tc.period > 0 && math.Abs(tm.fit.Period-tc.period) > tc.periodErr*tc.period:
					t.Errorf("seed %d: period %.3f s (idle model %v, cycle %.3f s), want %.2f s ± %.1f%%", seed, tm.fit.Period, idle, cycle, tc.period, 100*tc.periodErr)
				case tc.period > 0 && score < 0.8:
					t.Errorf("seed %d: score %.3f, want >= 0.8 (%+v)", seed, score, tm)
				case tc.period == 0 && tc.name != "long polling" && score > 0.35:
					t.Errorf("seed %d: score %.3f of random connections, want <= 0.35 (idle model %v)", seed, score, idle)
				}
			}
		})
	}
}
