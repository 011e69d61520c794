package sim_test

import (
	"bytes"
	"encoding/csv"
	"math"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/bench/sim"
	"github.com/ccflow/ccflow/testenv"
)

func TestDefaultConfigValidates(t *testing.T) {
	c := sim.DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("default configuration does not validate: %v", err)
	}
}

func TestConfigRejects(t *testing.T) {
	for name, mod := range map[string]func(*sim.Config){
		"real address space":    func(c *sim.Config) { c.SubscriberPrefixes = []netip.Prefix{netip.MustParsePrefix("8.8.0.0/16")} },
		"real IPv6 space":       func(c *sim.Config) { c.SubscriberPrefixes[1] = netip.MustParsePrefix("2a00::/16") },
		"overlaps the internet": func(c *sim.Config) { c.SubscriberPrefixes[0] = netip.MustParsePrefix("198.18.0.0/15") },
		"no IPv4 prefix":        func(c *sim.Config) { c.SubscriberPrefixes = c.SubscriberPrefixes[1:] },
		"prefix too small":      func(c *sim.Config) { c.SubscriberPrefixes[0] = netip.MustParsePrefix("10.0.0.0/24") },
		"no subscribers":        func(c *sim.Config) { c.Subscribers = 0 },
		"too many infected":     func(c *sim.Config) { c.InfectedPerBotnet = 1000 },
		"period order":          func(c *sim.Config) { c.BeaconPeriodMax = time.Second },
		"missed beats 1":        func(c *sim.Config) { c.MissedBeats = 1 },
		"no botnet services":    func(c *sim.Config) { c.BotnetServices = nil },
		"active timeout":        func(c *sim.Config) { c.ActiveTimeout = time.Hour },
		"zero start":            func(c *sim.Config) { c.Start = time.Time{} },
	} {
		c := sim.DefaultConfig()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := sim.New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// TestDeterministic: the same configuration and seed give the same records
// and truth; another seed gives others.
func TestDeterministic(t *testing.T) {
	cfg := testConfig()
	a := simulate(t, cfg, 600)
	b := simulate(t, cfg, 600)
	if !sameSteps(a, b) {
		t.Fatal("same seed, different records")
	}
	truth := func(c sim.Config) string {
		s, err := sim.New(c)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := s.WriteTruth(&buf, "sim", true); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	if first, second := truth(cfg), truth(cfg); first != second {
		t.Fatal("same seed, different truth")
	}
	other := cfg
	other.Seed = 2
	if truth(other) == truth(cfg) {
		t.Fatal("different seeds, same truth")
	}
	c := simulate(t, other, 600)
	if sameSteps(a, c) {
		t.Fatal("different seeds, same records")
	}
}

func sameSteps(a, b []step) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].exportMs != b[i].exportMs || !slices.Equal(a[i].recs, b[i].recs) {
			return false
		}
	}
	return true
}

// TestTruthCSV checks the truth file against the format of the shared data
// sets' truth.csv, which `ccflow eval` reads.
func TestTruthCSV(t *testing.T) {
	shared, err := os.ReadFile(testenv.Data(t, "truth.csv"))
	if err != nil {
		t.Fatal(err)
	}
	wantHeader, err := csv.NewReader(bytes.NewReader(shared)).Read()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, withSubs := range []bool{true, false} {
		var buf bytes.Buffer
		if err := s.WriteTruth(&buf, "ccflow-sim", withSubs); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(&buf).ReadAll()
		if err != nil {
			t.Fatalf("truth is not CSV: %v", err)
		}
		if diff := cmp.Diff(rows[0], wantHeader); diff != "" {
			t.Fatalf("truth header differs from the shared truth.csv (-got +want):\n%s", diff)
		}
		col := map[string]int{}
		for i, h := range rows[0] {
			col[h] = i
		}
		for _, need := range []string{"c2_dst", "dport", "proto"} {
			if _, ok := col[need]; !ok {
				t.Fatalf("truth has no %s column", need)
			}
		}
		if got, want := len(rows)-1, cfg.Botnets*cfg.InfectedPerBotnet; got != want {
			t.Fatalf("%d truth rows, want %d", got, want)
		}
		seen := map[string]bool{}
		for _, r := range rows[1:] {
			c2 := netip.MustParseAddr(r[col["c2_dst"]])
			if !inPools(c2) {
				t.Errorf("C&C %s outside the simulated internet", c2)
			}
			if r[col["proto"]] != "tcp" && r[col["proto"]] != "udp" {
				t.Errorf("proto %q", r[col["proto"]])
			}
			if r[col["dport"]] == "" || r[col["dataset"]] != "ccflow-sim" {
				t.Errorf("row %v", r)
			}
			src := r[col["infected_src"]]
			if withSubs {
				a := netip.MustParseAddr(src)
				if !cfg.SubscriberPrefixes[0].Contains(a) || seen[src] {
					t.Errorf("infected_src %s not a distinct subscriber", src)
				}
				seen[src] = true
			} else if src != "" {
				t.Errorf("infected_src %q written with subscribers off", src)
			}
		}
	}
	var buf bytes.Buffer
	if err := s.WriteBenign(&buf, "ccflow-sim"); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rows[0], sim.BenignHeader) || len(rows)-1 != cfg.NTPServers+cfg.UpdateServers+cfg.Resolvers {
		t.Fatalf("benign file: header %v, %d rows", rows[0], len(rows)-1)
	}
	c2s := map[string]bool{}
	for _, b := range s.Botnets() {
		c2s[b.C2.String()] = true
	}
	for _, r := range rows[1:] {
		if c2s[r[2]] {
			t.Errorf("benign service %s is also a C&C server", r[2])
		}
	}
}

func inPools(a netip.Addr) bool {
	for _, p := range sim.RemotePools {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// TestModel simulates six hours and checks the traffic model: addresses in
// their ranges, consistent times, periodic NTP and update checks, bots that
// beacon with their period and miss some beats, and background traffic that
// is bursty rather than periodic.
func TestModel(t *testing.T) {
	cfg := testConfig()
	cfg.BeaconPeriodMin, cfg.BeaconPeriodMax = 2*time.Minute, 5*time.Minute
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	subPrefix := func(a netip.Addr) bool {
		for _, p := range cfg.SubscriberPrefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	type pair struct{ src, dst netip.Addr }
	starts := map[pair][]int64{}
	kind := map[netip.Addr]string{}
	for _, b := range s.Benign() {
		kind[b.Addr] = b.Kind
	}
	for _, b := range s.Botnets() {
		kind[b.C2] = "c2"
	}
	const seconds = 6 * 3600
	var n, v6 int
	for range seconds {
		recs, exportMs := s.Next()
		for i := range recs {
			r := &recs[i]
			n++
			if r.Is6() {
				v6++
			}
			if r.EndMs >= exportMs || r.EndMs < exportMs-1000 || r.StartMs > r.EndMs || r.EndMs-r.StartMs >= cfg.ActiveTimeout.Milliseconds() {
				t.Fatalf("record times %d..%d exported at %d", r.StartMs, r.EndMs, exportMs)
			}
			if r.Packets == 0 || r.Bytes < r.Packets*20 {
				t.Fatalf("record with %d packets, %d bytes", r.Packets, r.Bytes)
			}
			sub, remote := r.Src, r.Dst
			if !subPrefix(sub) {
				sub, remote = remote, sub
			}
			if !subPrefix(sub) || !inPools(remote) {
				t.Fatalf("record %s -> %s: want a subscriber and a remote endpoint", r.Src, r.Dst)
			}
			if sub == r.Src {
				starts[pair{sub, remote}] = append(starts[pair{sub, remote}], r.StartMs)
			}
		}
	}
	if v6 == 0 || n < 100_000 {
		t.Fatalf("%d records, %d IPv6", n, v6)
	}
	// Per kind of remote: the coefficient of variation of each pair's
	// gaps between connections.
	cvs := map[string][]float64{}
	for p, st := range starts {
		if len(st) < 4 {
			continue
		}
		sort.Slice(st, func(i, j int) bool { return st[i] < st[j] })
		var gaps []float64
		for i := 1; i < len(st); i++ {
			gaps = append(gaps, float64(st[i]-st[i-1]))
		}
		k := kind[p.dst]
		if k == "" {
			k = "background"
		}
		cvs[k] = append(cvs[k], cv(gaps))
	}
	median := func(v []float64) float64 {
		sort.Float64s(v)
		if len(v) == 0 {
			return math.NaN()
		}
		return v[len(v)/2]
	}
	t.Logf("median CV of gaps: ntp %.2f (%d pairs), update %.2f (%d), c2 %.2f (%d), dns %.2f (%d), background %.2f (%d)",
		median(cvs["ntp"]), len(cvs["ntp"]), median(cvs["update"]), len(cvs["update"]), median(cvs["c2"]), len(cvs["c2"]),
		median(cvs["dns"]), len(cvs["dns"]), median(cvs["background"]), len(cvs["background"]))
	if m := median(cvs["ntp"]); !(m < 0.05) {
		t.Errorf("NTP polling is not periodic: median CV %.2f", m)
	}
	if m := median(cvs["update"]); !(m < 0.15) {
		t.Errorf("update checks are not periodic: median CV %.2f", m)
	}
	if m := median(cvs["background"]); !(m > 0.8) {
		t.Errorf("background traffic looks periodic: median CV %.2f", m)
	}
	if m := median(cvs["dns"]); !(m > 0.8) {
		t.Errorf("DNS traffic looks periodic: median CV %.2f", m)
	}
	// Bots: about duration/period*(1-missed) beacons, gaps near multiples of
	// the period.
	for _, b := range s.Botnets() {
		for _, src := range b.Infected {
			st := starts[pair{src, b.C2}]
			want := float64(seconds) / b.Period.Seconds() * (1 - b.Missed)
			if got := float64(len(st)); got < 0.7*want || got > 1.3*want {
				t.Errorf("botnet %d bot %s: %d beacons, want about %.0f", b.ID, src, len(st), want)
			}
			missed := 0
			for i := 1; i < len(st); i++ {
				gap := float64(st[i]-st[i-1]) / float64(b.Period.Milliseconds())
				beats := math.Round(gap)
				if beats < 1 || math.Abs(gap-beats) > b.Jitter*beats+0.01 {
					t.Errorf("botnet %d: gap %.2f periods", b.ID, gap)
				}
				missed += int(beats) - 1
			}
			if cfg.MissedBeats > 0 && missed == 0 && len(st) > 30 {
				t.Errorf("botnet %d bot %s never missed a beat", b.ID, src)
			}
		}
	}
	// Fan-in: the most popular service is visited by many subscribers.
	fanIn := map[netip.Addr]map[netip.Addr]bool{}
	for p := range starts {
		if fanIn[p.dst] == nil {
			fanIn[p.dst] = map[netip.Addr]bool{}
		}
		fanIn[p.dst][p.src] = true
	}
	best := 0
	for _, m := range fanIn {
		best = max(best, len(m))
	}
	if best < cfg.Subscribers/2 {
		t.Errorf("top fan-in %d of %d subscribers", best, cfg.Subscribers)
	}
}

func cv(v []float64) float64 {
	var sum, sq float64
	for _, x := range v {
		sum += x
	}
	mean := sum / float64(len(v))
	for _, x := range v {
		sq += (x - mean) * (x - mean)
	}
	return math.Sqrt(sq/float64(len(v))) / mean
}

// TestSubscriberAddresses checks numbering: IPv4 addresses follow the
// prefix, dual-stack subscribers get a /64 each.
func TestSubscriberAddresses(t *testing.T) {
	cfg := testConfig()
	cfg.SubscriberPrefixes = []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("fd00:1::/32")}
	steps := simulate(t, cfg, 120)
	for _, s := range steps {
		for _, r := range s.recs {
			sub := r.Src
			if inPools(sub) {
				sub = r.Dst
			}
			if !cfg.SubscriberPrefixes[0].Contains(sub) && !cfg.SubscriberPrefixes[1].Contains(sub) {
				t.Fatalf("subscriber address %s outside %v", sub, cfg.SubscriberPrefixes)
			}
			if strings.HasPrefix(sub.String(), "10.20.") && sub.As4()[3] == 0 && sub.As4()[2] == 0 {
				t.Fatalf("network address %s used", sub)
			}
		}
	}
}
