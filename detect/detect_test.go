package detect_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/flow"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC).UnixMilli()

func sub(i int) flow.Pseudonym {
	var p flow.Pseudonym
	p[0], p[1], p[15] = byte(i>>8), byte(i), 0xaa
	return p
}

// beacon returns n outbound flows from subscriber s to remote every period
// (with ±jitter ms), starting at start.
func beacon(s int, remote string, port uint16, start int64, period time.Duration, n int, jitter int64, r *rand.Rand) []flow.Pseudo {
	out := make([]flow.Pseudo, 0, n)
	t := start
	for i := 0; i < n; i++ {
		j := int64(0)
		if jitter > 0 {
			j = r.Int64N(2*jitter+1) - jitter
		}
		out = append(out, flow.Pseudo{
			TimeStartMs: t + j, TimeEndMs: t + j + 150,
			Kind: flow.KindSubscriber, Direction: flow.DirOutbound, Epoch: 7,
			Sub: sub(s), SubPort: uint16(40000 + i), Remote: flow.AddrFrom(netip.MustParseAddr(remote)), RemotePort: port,
			Proto: 6, Bytes: 420, Packets: 6, SamplingRate: 1,
		})
		t += period.Milliseconds()
	}
	return out
}

// noise returns flows from many subscribers to many endpoints at random
// times over span.
func noise(subs, eps, n int, start int64, span time.Duration, r *rand.Rand) []flow.Pseudo {
	out := make([]flow.Pseudo, 0, n)
	for i := 0; i < n; i++ {
		e := r.IntN(eps)
		out = append(out, flow.Pseudo{
			TimeStartMs: start + r.Int64N(span.Milliseconds()),
			Kind:        flow.KindSubscriber, Direction: flow.DirOutbound, Epoch: 7,
			Sub: sub(1000 + r.IntN(subs)), SubPort: uint16(r.IntN(60000)),
			Remote:     flow.AddrFrom(netip.AddrFrom4([4]byte{93, 184, byte(e >> 8), byte(e)})),
			RemotePort: 443, Proto: 6, Bytes: uint64(200 + r.IntN(50000)), SamplingRate: 1,
		})
	}
	return out
}

func sortFlows(fs []flow.Pseudo) {
	slicesSortStable(fs)
}

func newDetector(t testing.TB, cfg detect.Config, reg prometheus.Registerer) *detect.Detector {
	t.Helper()
	allow, err := detect.NewBuiltinAllowlist(cfg.Allowlists.Builtin)
	if err != nil {
		t.Fatal(err)
	}
	d, err := detect.New(cfg, detect.Deps{Registerer: reg, Allowlist: allow})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func feed(d *detect.Detector, fs []flow.Pseudo) {
	for i := 0; i < len(fs); i += 100 {
		d.Observe(fs[i:min(len(fs), i+100)])
	}
}

func TestDefaultConfigValidates(t *testing.T) {
	if err := detect.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, n := range detect.BuiltinAllowlists() {
		if _, err := detect.NewBuiltinAllowlist([]string{n}); err != nil {
			t.Errorf("built-in allowlist %s: %v", n, err)
		}
	}
}

func TestConfigValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		key    string
		mutate func(*detect.Config)
	}{
		{"window", func(c *detect.Config) { c.Window = 0 }},
		{"hop", func(c *detect.Config) { c.Hop = c.Window + time.Second }},
		{"allowed_lateness", func(c *detect.Config) { c.AllowedLateness = -1 }},
		{"sample_size", func(c *detect.Config) { c.SampleSize = 8 }},
		{"min_connections", func(c *detect.Config) { c.MinConnections = 2 }},
		{"full_connections", func(c *detect.Config) { c.FullConnections = 3 }},
		{"max_period", func(c *detect.Config) { c.MaxPeriod = c.MinPeriod }},
		{"period_tolerance", func(c *detect.Config) { c.PeriodTolerance = 0.5 }},
		{"threshold", func(c *detect.Config) { c.Threshold = 1.5 }},
		{"popular_share", func(c *detect.Config) { c.PopularShare = 0 }},
		{"allowlists.builtin", func(c *detect.Config) { c.Allowlists.Builtin = []string{"nope"} }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			c := detect.DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.key+":") {
				t.Errorf("Validate() = %v, want an error on %s", err, tc.key)
			}
		})
	}
}

func TestAllowlist(t *testing.T) {
	a := detect.NewAllowlist()
	in := `# comment
10.0.0.0/8              # any port
*          123/udp      # NTP
192.0.2.7  443          # one address, one port, any protocol
2001:db8::/32  5228-5230/tcp
`
	if err := a.Add("test", strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr  string
		port  uint16
		proto uint8
		want  string
	}{
		{"10.1.2.3", 80, 6, "test: 10.0.0.0/8 (any port)"},
		{"198.51.100.1", 123, 17, "test: * 123/udp (NTP)"},
		{"198.51.100.1", 123, 6, ""},
		{"192.0.2.7", 443, 17, "test: 192.0.2.7 443 (one address, one port, any protocol)"},
		{"192.0.2.8", 443, 6, ""},
		{"2001:db8::1", 5229, 6, "test: 2001:db8::/32 5228-5230/tcp"},
		{"2001:db8::1", 5231, 6, ""},
		{"::ffff:10.0.0.1", 1, 6, "test: 10.0.0.0/8 (any port)"},
	} {
		if got := a.Match(flow.AddrFrom(netip.MustParseAddr(tc.addr)), tc.port, tc.proto); got != tc.want {
			t.Errorf("Match(%s, %d, %d) = %q, want %q", tc.addr, tc.port, tc.proto, got, tc.want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "* ", "*\t*", "1.2.3.4 99999", "1.2.3.4 80-70", "1.2.3.4 80/bogus", "a b c"} {
		if err := detect.NewAllowlist().Add("bad", strings.NewReader(bad)); err == nil {
			t.Errorf("Add(%q) accepted", bad)
		}
	}
}

// TestDeployAllowlists parses the operator template shipped in
// deploy/allowlists.
func TestDeployAllowlists(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "deploy", "allowlists", "local.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := detect.NewAllowlist().Add("local", f); err != nil {
		t.Error(err)
	}
}

func TestObserveCountsOnlyOutboundSubscriberFlows(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := newDetector(t, detect.DefaultConfig(), reg)
	fs := beacon(1, "198.51.100.9", 443, t0, 30*time.Second, 4, 0, nil)
	fs[1].Direction = flow.DirInbound
	fs[2].Kind = flow.KindBoth
	fs[3].Kind = flow.KindTransit
	d.Observe(fs)
	if got := testutil.ToFloat64(mustCounter(t, reg, "ccflow_detect_flows_total", "ignored")); got != 3 {
		t.Errorf("ignored flows = %v, want 3", got)
	}
	if s := d.Stats(); s.Pairs != 1 || s.Subscribers != 1 || s.Endpoints != 1 {
		t.Errorf("stats %+v, want one pair", s)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name, result string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == result {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
}

// TestEventTimeWindows runs three hours of a beacon through one-hour
// windows with a 30-minute hop: windows are evaluated as the watermark
// passes their ends, in event time, and late flows are dropped.
func TestEventTimeWindows(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.Window, cfg.Hop, cfg.AllowedLateness = time.Hour, 30*time.Minute, time.Minute
	reg := prometheus.NewRegistry()
	d := newDetector(t, cfg, reg)
	r := rand.New(rand.NewPCG(1, 1))
	fs := beacon(1, "198.51.100.9", 443, t0, 20*time.Second, 3*180, 500, r)
	feed(d, fs)
	res := d.Results()
	// Flows from 10:00 to 13:00: windows end at 10:30, 11:00, ..., 12:30
	// (13:00 is not passed by the watermark 12:59).
	if len(res) != 5 {
		t.Fatalf("%d windows evaluated, want 5", len(res))
	}
	for i, w := range res {
		wantEnd := time.UnixMilli(t0).Add(time.Duration(i+1) * 30 * time.Minute).UTC()
		if !w.WindowEnd.Equal(wantEnd) || w.WindowEnd.Sub(w.WindowStart) != time.Hour {
			t.Errorf("window %d = [%s, %s), want end %s", i, w.WindowStart, w.WindowEnd, wantEnd)
		}
	}
	// From the second window on, the beacon is a candidate.
	for _, w := range res[1:] {
		if len(w.Candidates) != 1 || w.Candidates[0].RemotePort != 443 {
			t.Errorf("window ending %s: candidates %v", w.WindowEnd, w.Candidates)
		} else if p := w.Candidates[0].PeriodS; p < 19.5 || p > 20.5 {
			t.Errorf("period %.2f, want 20", p)
		}
	}
	// A flow from before the current window is late.
	late := beacon(1, "198.51.100.9", 443, t0, time.Second, 1, 0, nil)
	d.Observe(late)
	if got := testutil.ToFloat64(mustCounter(t, reg, "ccflow_detect_flows_total", "late")); got != 1 {
		t.Errorf("late flows = %v, want 1", got)
	}
	d.Flush()
	if res := d.Results(); len(res) != 1 || !res[0].WindowEnd.After(time.UnixMilli(t0).Add(179*time.Minute)) {
		t.Errorf("flush gave %d windows", len(res))
	}
}

func TestAdvanceEvaluatesIdleWindows(t *testing.T) {
	d := newDetector(t, detect.DefaultConfig(), nil)
	d.Observe(beacon(1, "198.51.100.9", 443, t0, 30*time.Second, 100, 0, nil))
	if len(d.Results()) != 0 {
		t.Fatal("window evaluated before its end")
	}
	d.Advance(time.UnixMilli(t0).Add(2 * time.Hour))
	res := d.Results()
	if len(res) != 2 || len(res[0].Candidates) != 1 {
		t.Fatalf("Advance: %d windows", len(res))
	}
}

// TestContinuationRecords checks that records of one long connection, cut
// by a router's active timeout every 60 s, are not mistaken for a beacon
// when the subscriber port is kept.
func TestContinuationRecords(t *testing.T) {
	for _, port := range []uint16{50000} {
		reg := prometheus.NewRegistry()
		d := newDetector(t, detect.DefaultConfig(), reg)
		fs := beacon(1, "198.51.100.9", 443, t0, 60*time.Second, 100, 0, nil)
		for i := range fs {
			fs[i].SubPort = port
			fs[i].TimeEndMs = fs[i].TimeStartMs + 59_500
		}
		d.Observe(fs)
		d.Flush()
		for _, r := range d.Results() {
			if len(r.Candidates) != 0 {
				t.Errorf("port %d: a long connection became a candidate: %s", port, r.Candidates[0].Explanation)
			}
		}
		if got := testutil.ToFloat64(mustCounter(t, reg, "ccflow_detect_flows_total", "continuation")); got != 99 {
			t.Errorf("port %d: %v continuation records, want 99", port, got)
		}
	}
	// Connections one minute apart with zeroed ports stay a beacon.
	fs := beacon(1, "198.51.100.9", 443, t0, 60*time.Second, 100, 0, nil)
	for i := range fs {
		fs[i].SubPort = 0
	}
	if c := run1(t, detect.DefaultConfig(), fs); len(c) == 0 {
		t.Error("a beacon with zeroed ports was taken for one connection")
	}
}

func run1(t *testing.T, cfg detect.Config, fs []flow.Pseudo) []flow.Candidate {
	t.Helper()
	sortFlows(fs)
	d := newDetector(t, cfg, nil)
	feed(d, fs)
	d.Flush()
	var out []flow.Candidate
	for _, r := range d.Results() {
		out = append(out, r.Candidates...)
	}
	return out
}

// TestIntelRaisesRank: two endpoints with the same beacon; the one on an
// intel list says so and ranks first.
func TestIntelRaisesRank(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	a := beacon(1, "198.51.100.1", 8080, t0, 15*time.Second, 200, 300, r)
	b := beacon(2, "198.51.100.2", 8080, t0, 15*time.Second, 200, 300, r)
	for i := range b {
		b[i].Intel = "abuse-c2,feodo"
	}
	cands := run1(t, detect.DefaultConfig(), append(a, b...))
	if len(cands) != 2 {
		t.Fatalf("%d candidates, want 2", len(cands))
	}
	if cands[0].RemoteAddr.String() != "198.51.100.2" {
		t.Fatalf("listed endpoint ranks %s first", cands[0].RemoteAddr)
	}
	if !strings.Contains(cands[0].Explanation, "listed on threat intel: abuse-c2, feodo") {
		t.Errorf("explanation does not name the lists: %q", cands[0].Explanation)
	}
	if diff := cmp.Diff(cands[0].Intel, []string{"abuse-c2", "feodo"}); diff != "" {
		t.Errorf("Intel (-got +want):\n%s", diff)
	}
	if cands[0].Components.Intel != 1 || cands[1].Components.Intel != 0 || cands[0].Score <= cands[1].Score {
		t.Errorf("intel component/score: %+v vs %+v", cands[0].Components, cands[1].Components)
	}
	if strings.Contains(cands[1].Explanation, "intel") {
		t.Errorf("unlisted endpoint mentions intel: %q", cands[1].Explanation)
	}
}

func TestProviderLowersAndEnrichmentIsCopied(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	a := beacon(1, "198.51.100.1", 443, t0, 15*time.Second, 200, 300, r)
	b := beacon(2, "198.51.100.2", 443, t0, 15*time.Second, 200, 300, r)
	for i := range b {
		b[i].Provider, b[i].RemoteASN, b[i].RemoteASOrg, b[i].RemoteCountry = "cdn", 64500, "Example CDN", "NL"
	}
	cands := run1(t, detect.DefaultConfig(), append(a, b...))
	if len(cands) != 2 || cands[1].RemoteAddr.String() != "198.51.100.2" {
		t.Fatalf("provider endpoint does not rank last: %v", cands)
	}
	c := cands[1]
	if c.ASN != 64500 || c.ASOrg != "Example CDN" || c.Country != "NL" || c.Components.Provider != 1 {
		t.Errorf("enrichment not copied: %+v", c)
	}
	if !strings.Contains(c.Explanation, "provider class cdn lowers the score") || c.Score >= cands[0].Score {
		t.Errorf("provider discount not applied or explained: %q", c.Explanation)
	}
}

func TestAllowlistSuppresses(t *testing.T) {
	fs := beacon(1, "192.0.2.123", 123, t0, 16*time.Second, 220, 0, nil)
	for i := range fs {
		fs[i].Proto = 17
	}
	fs = append(fs, beacon(2, "198.51.100.5", 443, t0, 30*time.Second, 110, 0, nil)...)
	sortFlows(fs)
	d := newDetector(t, detect.DefaultConfig(), nil)
	feed(d, fs)
	d.Flush()
	res := d.Results()
	if len(res) != 1 || len(res[0].Candidates) != 2 {
		t.Fatalf("results %+v", res)
	}
	got := res[0].Candidates
	if got[0].Suppressed != "" || got[1].Suppressed != "ntp: * 123/udp (NTP (RFC 5905))" {
		t.Errorf("suppressed = %q, %q", got[0].Suppressed, got[1].Suppressed)
	}
	if !strings.Contains(got[1].Explanation, "suppressed by allowlist ntp") {
		t.Errorf("explanation: %q", got[1].Explanation)
	}
	for _, p := range res[0].Pairs {
		if p.RemotePort == 123 {
			t.Error("pair scores of an allowlisted endpoint were emitted")
		}
	}
}

// TestFanInAndPairScores: six subscribers run one bot; the endpoint has
// fan-in 6 and every pair gets a pair score carrying its pseudonym.
func TestFanInAndPairScores(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	var fs []flow.Pseudo
	for s := 1; s <= 6; s++ {
		fs = append(fs, beacon(s, "203.0.113.50", 8443, t0+int64(s)*1700, 60*time.Second, 60, 800, r)...)
	}
	fs = append(fs, noise(300, 200, 20000, t0, time.Hour, r)...)
	sortFlows(fs)
	d := newDetector(t, detect.DefaultConfig(), nil)
	feed(d, fs)
	d.Flush()
	res := d.Results()
	if len(res) != 1 || len(res[0].Candidates) == 0 {
		t.Fatal("no candidates")
	}
	c := res[0].Candidates[0]
	if c.RemoteAddr.String() != "203.0.113.50" || c.Subscribers != 6 || c.BeaconingSubscribers != 6 || c.Components.FanIn < 0.9 {
		t.Fatalf("top candidate %+v", c)
	}
	seen := map[flow.Pseudonym]bool{}
	for _, p := range res[0].Pairs {
		if p.RemoteAddr.String() == "203.0.113.50" {
			seen[p.Sub] = true
			if p.Epoch != 7 || p.ModelVersion != detect.ModelVersion || p.PeriodS < 59 || p.PeriodS > 61 || p.Evidence != flow.EvidenceBeaconing {
				t.Errorf("pair score %+v", p)
			}
		}
	}
	if len(seen) != 6 {
		t.Errorf("%d pair scores for the bot's pairs, want 6", len(seen))
	}
	if len(res[0].Candidates) > 1 {
		t.Errorf("noise produced candidates: %v", res[0].Candidates[1:])
	}
}

// TestHyperLogLogFanIn: an endpoint reached by more subscribers than
// fan_in_exact counts them with a sketch, within a few percent.
// weakBots returns the flows of n subscribers (numbered from first) that
// each call remote every 5 minutes (±10%, a fifth of the beats missed)
// for an hour: about a dozen connections each, too few for any pair to
// reach pair_threshold alone, while their pooled intervals make the
// endpoint a candidate (as in the simulated ISP of make demo).
func weakBots(first, n int, remote string, port uint16, r *rand.Rand) []flow.Pseudo {
	var fs []flow.Pseudo
	for s := first; s < first+n; s++ {
		for _, f := range beacon(s, remote, port, t0+30_000+r.Int64N(200_000), 5*time.Minute, 12, 30_000, r) {
			if r.IntN(5) > 0 {
				fs = append(fs, f)
			}
		}
	}
	return fs
}

// TestCandidateEvidencePairs: every pair of a reported candidate's
// endpoint is in Result.Pairs, even when none reaches pair_threshold
// alone, marked as evidence; an allowlisted endpoint's pairs are not, and
// the evidence of one candidate is bounded.
func TestCandidateEvidencePairs(t *testing.T) {
	const cc, ntp = "203.0.113.77", "192.0.2.123"
	r := rand.New(rand.NewPCG(8, 8))
	fs := weakBots(1, 5, cc, 8080, r)
	// A sixth subscriber reached the C&C twice: a contact, not scored.
	fs = append(fs, beacon(6, cc, 8080, t0+600_000, 7*time.Minute, 2, 0, nil)...)
	// The same schedule to an NTP server: a suppressed candidate.
	for _, f := range weakBots(11, 5, ntp, 123, r) {
		f.Proto = 17
		fs = append(fs, f)
	}
	fs = append(fs, noise(300, 200, 5000, t0, time.Hour, r)...)
	sortFlows(fs)
	cfg := detect.DefaultConfig()
	d := newDetector(t, cfg, nil)
	feed(d, fs)
	d.Flush()
	res := d.Results()
	if len(res) != 1 {
		t.Fatalf("%d results, want 1", len(res))
	}
	var found, suppressed bool
	for _, c := range res[0].Candidates {
		switch c.RemoteAddr.String() {
		case cc:
			found = c.Suppressed == "" && c.Subscribers == 6 && c.BeaconingSubscribers == 5
			if !found {
				t.Errorf("C&C candidate %+v, want reported with 6 subscribers, 5 beaconing", c)
			}
		case ntp:
			suppressed = c.Suppressed != ""
		}
	}
	if !found || !suppressed {
		t.Fatalf("C&C reported %v, NTP suppressed %v; candidates %+v", found, suppressed, res[0].Candidates)
	}
	got := map[flow.Pseudonym]string{}
	for _, p := range res[0].Pairs {
		switch p.RemoteAddr.String() {
		case ntp:
			t.Errorf("pair score of the allowlisted endpoint: %+v", p)
		case cc:
			got[p.Sub] = p.Evidence
			if p.Evidence == flow.EvidenceBeaconing && (p.Score <= 0 || p.Score >= cfg.PairThreshold || p.PeriodS < 270 || p.PeriodS > 330 || p.Flows < 6) {
				t.Errorf("beaconing pair %+v: want a score below pair_threshold %.2f, a period of about 300 s", p, cfg.PairThreshold)
			}
			if p.Evidence == flow.EvidenceContact && (p.Score != 0 || p.PeriodS != 0 || p.Flows != 2) {
				t.Errorf("contact pair %+v: want 2 flows, no score", p)
			}
			if p.ModelVersion != detect.ModelVersion || p.Epoch != 7 || p.WindowEnd != res[0].WindowEnd {
				t.Errorf("pair score %+v", p)
			}
		default:
			if p.Evidence != flow.EvidenceOwn || p.Score < cfg.PairThreshold {
				t.Errorf("pair of a non-candidate: %+v", p)
			}
		}
	}
	want := map[flow.Pseudonym]string{sub(6): flow.EvidenceContact}
	for s := 1; s <= 5; s++ {
		want[sub(s)] = flow.EvidenceBeaconing
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("pairs of the C&C endpoint, pseudonym -> evidence (-got +want):\n%s", diff)
	}

	t.Run("bounded", func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 9))
		n := detect.MaxEvidencePairs + 20
		fs := weakBots(1, n, cc, 8080, r)
		fs = append(fs, noise(300, 200, 5000, t0, time.Hour, r)...)
		sortFlows(fs)
		cfg := detect.DefaultConfig()
		cfg.PopularMinSubscribers = 10 * n // one botnet, not a popular service
		d := newDetector(t, cfg, nil)
		feed(d, fs)
		d.Flush()
		res := d.Results()
		if len(res) != 1 || len(res[0].Candidates) == 0 || res[0].Candidates[0].RemoteAddr.String() != cc {
			t.Fatalf("results %+v", res)
		}
		c := res[0].Candidates[0]
		if c.BeaconingSubscribers <= detect.MaxEvidencePairs {
			t.Fatalf("candidate has %d beaconing subscribers, want more than %d", c.BeaconingSubscribers, detect.MaxEvidencePairs)
		}
		got := map[string]int{}
		for _, p := range res[0].Pairs {
			if p.RemoteAddr.String() == cc {
				if p.Score >= cfg.PairThreshold {
					t.Fatalf("pair %+v reaches pair_threshold alone: not the case under test", p)
				}
				got[p.Evidence]++
			}
		}
		if diff := cmp.Diff(got, map[string]int{flow.EvidenceBeaconing: detect.MaxEvidencePairs}); diff != "" {
			t.Errorf("pairs of a candidate with %d beaconing subscribers, by evidence (-got +want):\n%s", c.BeaconingSubscribers, diff)
		}
	})
}

func TestHyperLogLogFanIn(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.FanInExact = 16
	cfg.Threshold = 0
	var fs []flow.Pseudo
	for s := 0; s < 2000; s++ {
		fs = append(fs, beacon(s, "203.0.113.80", 443, t0+int64(s)*900, 10*time.Minute, 6, 0, nil)...)
	}
	cands := run1(t, cfg, fs)
	if len(cands) == 0 {
		t.Fatal("no candidates")
	}
	// The last window covers all of it.
	if n := cands[len(cands)-1].Subscribers; n < 1900 || n > 2100 {
		t.Errorf("fan-in %d, want 2000 ± 5%%", n)
	}
}

func TestEvictionKeepsBudget(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.MaxPairs = 500
	reg := prometheus.NewRegistry()
	d := newDetector(t, cfg, reg)
	r := rand.New(rand.NewPCG(5, 5))
	fs := append(beacon(1, "203.0.113.9", 443, t0, 20*time.Second, 180, 200, r), noise(3000, 3000, 30000, t0, time.Hour, r)...)
	sortFlows(fs)
	feed(d, fs)
	s := d.Stats()
	if s.Pairs > 500 || s.Evictions == 0 {
		t.Errorf("pairs %d, evictions %d; want at most 500 and some evictions", s.Pairs, s.Evictions)
	}
	if got := testutil.ToFloat64(mustGauge(t, reg, "ccflow_detect_tracked_pairs")); got != float64(s.Pairs) {
		t.Errorf("tracked pairs metric %v, stats %d", got, s.Pairs)
	}
	if got := testutil.ToFloat64(mustGauge(t, reg, "ccflow_detect_tracked_bytes")); got <= 0 {
		t.Errorf("tracked bytes metric %v", got)
	}
	d.Flush()
	res := d.Results()
	if len(res) == 0 || len(res[0].Candidates) == 0 || res[0].Candidates[0].RemoteAddr.String() != "203.0.113.9" {
		t.Errorf("the active beacon was evicted")
	}
}

func mustGauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}

func TestByteBudget(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.MaxPairs = 0
	cfg.MaxBytes = 1 << 20
	d := newDetector(t, cfg, nil)
	r := rand.New(rand.NewPCG(6, 6))
	fs := noise(20000, 20000, 100000, t0, time.Hour, r)
	sortFlows(fs)
	feed(d, fs)
	if s := d.Stats(); s.Bytes > 3<<20/2 || s.Evictions == 0 {
		t.Errorf("bytes %d with a 1 MiB budget, evictions %d", s.Bytes, s.Evictions)
	}
}

// TestCheckpointResumes: a detector restored from a checkpoint taken
// half-way gives the same results as one that ran through.
func TestCheckpointResumes(t *testing.T) {
	cfg := detect.DefaultConfig()
	cfg.Window, cfg.Hop = 2*time.Hour, 30*time.Minute
	cfg.FanInExact = 8
	r := rand.New(rand.NewPCG(7, 7))
	var fs []flow.Pseudo
	for s := 1; s <= 12; s++ {
		fs = append(fs, beacon(s, "203.0.113.50", 8443, t0+int64(s)*1300, 45*time.Second, 300, 500, r)...)
	}
	fs = append(fs, noise(500, 300, 40000, t0, 4*time.Hour, r)...)
	for i := range fs {
		if i%7 == 0 {
			fs[i].Intel, fs[i].Provider, fs[i].RemoteASOrg = "x", "cloud", "Org"
		}
	}
	sortFlows(fs)
	half := len(fs) / 2

	whole := newDetector(t, cfg, nil)
	feed(whole, fs)
	whole.Flush()
	want := whole.Results()

	first := newDetector(t, cfg, nil)
	feed(first, fs[:half])
	before := first.Results()
	var buf bytes.Buffer
	n, err := first.Checkpoint(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("Checkpoint: %d, %v (buffer %d)", n, err, buf.Len())
	}
	second := newDetector(t, cfg, nil)
	if err := second.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if a, b := first.Stats(), second.Stats(); a.Pairs != b.Pairs || a.Subscribers != b.Subscribers || a.Endpoints != b.Endpoints {
		t.Errorf("restored stats %+v, want %+v", b, a)
	}
	feed(second, fs[half:])
	second.Flush()
	got := append(before, second.Results()...)
	if diff := cmp.Diff(got, want, cmpopts.EquateApprox(0, 0.002), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("results after restore (-got +want):\n%s", diff)
	}
}

// TestRestoreVersion1 restores a version-1 checkpoint (written by the
// detector before pair flags were checkpointed: 3 subscribers beaconing to
// 203.0.113.50:8443 every 45 s for 45 minutes, and noise; window 2h, hop
// 30m): its pairs resume, counted as having exchanged data.
func TestRestoreVersion1(t *testing.T) {
	c := restoreOldCheckpoint(t, "checkpoint-v1.bin", 348)
	if strings.Contains(c.Explanation, "no connection exchanged data") {
		t.Errorf("version-1 pairs count as unanswered: %s", c.Explanation)
	}
}

// restoreOldCheckpoint restores testdata/file, written by an older detector
// from the same traffic (3 subscribers beaconing to 203.0.113.50:8443 every
// 45 s for 45 minutes, and noise; window 2h, hop 30m), checks its pair,
// subscriber and endpoint counts, flushes and returns the beacon's
// candidate.
func restoreOldCheckpoint(t *testing.T, file string, wantPairs int) flow.Candidate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	cfg := detect.DefaultConfig()
	cfg.Window, cfg.Hop = 2*time.Hour, 30*time.Minute
	d := newDetector(t, cfg, nil)
	if err := d.Restore(bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.Pairs != wantPairs || st.Subscribers != 53 || st.Endpoints != 31 {
		t.Errorf("restored %+v, want %d pairs, 53 subscribers, 31 endpoints", st, wantPairs)
	}
	d.Flush()
	for _, r := range d.Results() {
		for _, c := range r.Candidates {
			if c.RemoteAddr.String() == "203.0.113.50" && c.RemotePort == 8443 {
				return c
			}
		}
	}
	t.Fatal("the restored beacon is not a candidate")
	return flow.Candidate{}
}

// TestUnansweredIsExplained: a beacon whose every connection is a refused
// handshake (2 packets, 120 bytes, as Argus reports SYN and RST) is scored
// like a live one, and the explanation says that no data was exchanged.
func TestUnansweredIsExplained(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	live := beacon(1, "203.0.113.60", 6889, t0, 30*time.Second, 100, 0, r)
	dead := beacon(2, "203.0.113.61", 6889, t0, 30*time.Second, 100, 0, r)
	for i := range dead {
		dead[i].Packets, dead[i].Bytes = 2, 120
	}
	cands := run1(t, detect.DefaultConfig(), append(live, dead...))
	got := map[string]flow.Candidate{}
	for _, c := range cands {
		got[c.RemoteAddr.String()] = c
	}
	l, ok1 := got["203.0.113.60"]
	u, ok2 := got["203.0.113.61"]
	if !ok1 || !ok2 {
		t.Fatalf("candidates %v", cands)
	}
	if !strings.Contains(u.Explanation, "no connection exchanged data") || strings.Contains(l.Explanation, "no connection exchanged data") {
		t.Errorf("explanations:\n%s\n%s", l.Explanation, u.Explanation)
	}
	if math.Abs(l.Score-u.Score) > 0.05 {
		t.Errorf("scores %.3f (live) and %.3f (unanswered) differ", l.Score, u.Score)
	}
}

func TestRestoreRejects(t *testing.T) {
	cfg := detect.DefaultConfig()
	d := newDetector(t, cfg, nil)
	d.Observe(beacon(1, "203.0.113.50", 443, t0, time.Minute, 30, 0, nil))
	var buf bytes.Buffer
	if _, err := d.Checkpoint(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	for name, tc := range map[string]struct {
		data []byte
		cfg  func(*detect.Config)
	}{
		"empty":        {data: nil},
		"foreign":      {data: []byte("not a checkpoint at all")},
		"truncated":    {data: good[:len(good)/2]},
		"bit flip":     {data: flip(good, len(good)/3)},
		"other window": {data: good, cfg: func(c *detect.Config) { c.Window = 3 * time.Hour }},
	} {
		t.Run(name, func(t *testing.T) {
			c := cfg
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			fresh := newDetector(t, c, nil)
			err := fresh.Restore(bytes.NewReader(tc.data))
			if !errors.Is(err, detect.ErrCheckpoint) {
				t.Errorf("Restore = %v, want ErrCheckpoint", err)
			}
			if s := fresh.Stats(); s.Pairs != 0 {
				t.Errorf("failed restore left %d pairs", s.Pairs)
			}
		})
	}
	if err := d.Restore(bytes.NewReader(good)); err == nil {
		t.Error("restore into a detector with state accepted")
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x10
	return c
}

func FuzzRestore(f *testing.F) {
	d, _ := detect.New(detect.DefaultConfig(), detect.Deps{})
	d.Observe(beacon(1, "203.0.113.50", 443, t0, time.Minute, 40, 0, nil))
	var buf bytes.Buffer
	_, _ = d.Checkpoint(&buf)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		fresh, err := detect.New(detect.DefaultConfig(), detect.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if fresh.Restore(bytes.NewReader(data)) == nil {
			// A checkpoint that restores must keep working.
			fresh.Observe(beacon(2, "203.0.113.51", 443, t0, time.Minute, 10, 0, nil))
			fresh.Flush()
		}
	})
}

// TestObserveDoesNotAllocate: in steady state (known pairs) Observe
// allocates nothing.
func TestObserveDoesNotAllocate(t *testing.T) {
	d := newDetector(t, detect.DefaultConfig(), nil)
	r := rand.New(rand.NewPCG(8, 8))
	fs := noise(200, 200, 5000, t0, 10*time.Minute, r)
	sortFlows(fs)
	d.Observe(fs)
	batch := make([]flow.Pseudo, 256)
	copy(batch, fs[len(fs)-256:])
	allocs := testing.AllocsPerRun(50, func() {
		for i := range batch {
			batch[i].TimeStartMs += 10
		}
		d.Observe(batch)
	})
	if allocs > 0 {
		t.Errorf("Observe allocates %.1f times per batch of known pairs", allocs)
	}
}

func TestStatsAndBytes(t *testing.T) {
	d := newDetector(t, detect.DefaultConfig(), nil)
	if s := d.Stats(); !s.Watermark.IsZero() || s.Pairs != 0 {
		t.Errorf("empty stats %+v", s)
	}
	d.Observe(beacon(1, "203.0.113.50", 443, t0, time.Minute, 10, 0, nil))
	s := d.Stats()
	if s.Pairs != 1 || s.Bytes <= 0 || s.Watermark.IsZero() {
		t.Errorf("stats %+v", s)
	}
	if got := fmt.Sprint(s.Watermark.UnixMilli()); got != fmt.Sprint(t0+9*60_000-5*60_000) {
		t.Errorf("watermark %s", s.Watermark)
	}
}

// loopFlows returns n outbound flows from subscriber s to remote: a sleep
// loop (each connection starts sleep after the previous one ended) when
// loop is set, else a timer (every sleep, however long each connection
// lasts). Most connections take 0.15-0.25 s, one in five 2-8 s.
func loopFlows(s int, remote string, loop bool, sleep time.Duration, n int, r *rand.Rand) []flow.Pseudo {
	out := make([]flow.Pseudo, 0, n)
	t := t0
	for i := 0; i < n; i++ {
		d := 150 + r.Int64N(100)
		if r.IntN(5) == 0 {
			d = 2000 + r.Int64N(6000)
		}
		out = append(out, flow.Pseudo{
			TimeStartMs: t, TimeEndMs: t + d,
			Kind: flow.KindSubscriber, Direction: flow.DirOutbound, Epoch: 7,
			Sub: sub(s), SubPort: uint16(40000 + i), Remote: flow.AddrFrom(netip.MustParseAddr(remote)), RemotePort: 443,
			Proto: 6, Bytes: 1500, Packets: 12, SamplingRate: 1,
		})
		t += sleep.Milliseconds() + r.Int64N(5) - 2
		if loop {
			t += d
		}
	}
	return out
}

// TestSleepLoopAndTimer: a sleep loop is reported with its sleep, measured
// on the idle times between connections, and says so; a timer with the
// same variable request times is reported with its period, start to start.
// Durations survive a checkpoint (taken before the last 4 connections:
// without the restored durations, too few idle times are left). Under sampling the idle
// model is not used.
func TestSleepLoopAndTimer(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	fs := append(loopFlows(1, "198.51.100.10", true, 20*time.Second, 150, r), loopFlows(2, "198.51.100.11", false, 20*time.Second, 150, r)...)
	sortFlows(fs)
	check := func(t *testing.T, cands []flow.Candidate) {
		t.Helper()
		got := map[string]flow.Candidate{}
		for _, c := range cands {
			if o, ok := got[c.RemoteAddr.String()]; !ok || c.Score > o.Score {
				got[c.RemoteAddr.String()] = c
			}
		}
		loop, ok1 := got["198.51.100.10"]
		timer, ok2 := got["198.51.100.11"]
		if !ok1 || !ok2 {
			t.Fatalf("candidates %v", cands)
		}
		if !strings.Contains(loop.Explanation, "sleep loop") || math.Abs(loop.PeriodS-20) > 0.02*20 {
			t.Errorf("sleep loop: period %.3f s, want 20 s ± 2%%, in a sleep loop: %s", loop.PeriodS, loop.Explanation)
		}
		if !strings.Contains(timer.Explanation, "start to start") || strings.Contains(timer.Explanation, "sleep loop") || math.Abs(timer.PeriodS-20) > 0.005*20 {
			t.Errorf("timer: period %.3f s, want 20 s ± 0.5%%, start to start: %s", timer.PeriodS, timer.Explanation)
		}
	}
	t.Run("straight", func(t *testing.T) { check(t, run1(t, detect.DefaultConfig(), slices.Clone(fs))) })
	t.Run("checkpoint", func(t *testing.T) {
		cfg := detect.DefaultConfig()
		first := newDetector(t, cfg, nil)
		feed(first, fs[:len(fs)-4])
		var buf bytes.Buffer
		if _, err := first.Checkpoint(&buf); err != nil {
			t.Fatal(err)
		}
		second := newDetector(t, cfg, nil)
		if err := second.Restore(&buf); err != nil {
			t.Fatal(err)
		}
		feed(second, fs[len(fs)-4:])
		second.Flush()
		var cands []flow.Candidate
		for _, r := range append(first.Results(), second.Results()...) {
			cands = append(cands, r.Candidates...)
		}
		check(t, cands)
	})
	t.Run("sampled", func(t *testing.T) {
		var thin []flow.Pseudo
		for i, f := range fs {
			if i%2 == 0 {
				f.SamplingRate = 2
				thin = append(thin, f)
			}
		}
		for _, c := range run1(t, detect.DefaultConfig(), thin) {
			if strings.Contains(c.Explanation, "sleep loop") {
				t.Errorf("sleep loop under 1:2 sampling: %s", c.Explanation)
			}
		}
	})
}

// TestRestoreVersion2 restores a version-2 checkpoint (written by the
// detector before durations were checkpointed: 3 subscribers beaconing to
// 203.0.113.50:8443 every 45 s for 45 minutes, and noise; window 2h, hop
// 30m): its pairs resume with unknown durations, measured start to start.
func TestRestoreVersion2(t *testing.T) {
	c := restoreOldCheckpoint(t, "checkpoint-v2.bin", 283)
	if !strings.Contains(c.Explanation, "every 45.0 s start to start") {
		t.Errorf("explanation: %s", c.Explanation)
	}
}
