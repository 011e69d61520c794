package detect_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ccflow/ccflow/bench/sim"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/flow"
)

// The synthetic ISP of `ccflow simulate` (bench/sim) run through the
// detector: its botnets are the truth, and its benign periodic services
// (NTP, update checks, DNS) and popular web services are the traps.

// simVariant is one way of exporting the simulated ISP's flows: keep
// says whether a record is exported (and may change it, as a sampler
// does), and the detector sees the exported records.
type simVariant struct {
	name  string
	keep  func(*flow.Record) bool
	exact bool // the candidates must be exactly the C&C servers
	d     *detect.Detector
	n     int
}

// runSimISP runs d of event time of the default synthetic ISP (the given
// seed) into one detector per variant, one simulated second at a time
// (records come out by end time, at most a minute after their start: the
// detector's allowed lateness absorbs it), and returns the simulator for
// its truth. Nothing is held but the detectors' state.
func runSimISP(t testing.TB, d time.Duration, seed uint64, variants []*simVariant) *sim.Simulator {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.Seed = seed
	cfg.Start = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	allow, err := detect.NewBuiltinAllowlist(detect.DefaultConfig().Allowlists.Builtin)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range variants {
		if v.d, err = detect.New(detect.DefaultConfig(), detect.Deps{Allowlist: allow}); err != nil {
			t.Fatal(err)
		}
	}
	priv := newFakePrivacy("100.64.0.0/10", "2001:db8::/32")
	var all, kept []flow.Record
	for range int(d / time.Second) {
		recs, _ := s.Next()
		all = all[:0]
		for i := range recs {
			all = append(all, simRecord(&recs[i]))
		}
		for _, v := range variants {
			kept = kept[:0]
			for _, r := range all {
				if v.keep(&r) {
					kept = append(kept, r)
				}
			}
			v.n += len(kept)
			v.d.Observe(priv.pseudonymize(kept))
		}
	}
	for _, v := range variants {
		v.d.Flush()
	}
	return s
}

func simRecord(r *sim.Record) flow.Record {
	return flow.Record{
		TimeStartMs: r.StartMs, TimeEndMs: r.EndMs, TimeReceivedMs: r.EndMs,
		SrcAddr: flow.RawAddr(flow.AddrFrom(r.Src)), DstAddr: flow.RawAddr(flow.AddrFrom(r.Dst)),
		SrcPort: r.SrcPort, DstPort: r.DstPort, Proto: r.Proto, TCPFlags: r.TCPFlags,
		Bytes: r.Bytes, Packets: r.Packets, SamplingRate: 1, InIf: r.InIf, OutIf: r.OutIf,
	}
}

// thinFlows keeps each record with probability 1/n and marks it 1:n
// sampled, like `ccflow replay --sample n`.
func thinFlows(n int, seed uint64) func(*flow.Record) bool {
	r := rand.New(rand.NewPCG(seed, 0x5a5a))
	return func(rec *flow.Record) bool {
		if r.IntN(n) != 0 {
			return false
		}
		rec.SamplingRate = uint32(n)
		return true
	}
}

// samplePackets applies bench/sim's 1:n packet sampler, as `ccflow
// simulate --sampling n` does at the routers: a flow is exported when one
// of its packets is selected, with the selected packets' counts (a single
// packet at a time within the flow).
func samplePackets(n uint32, seed uint64) func(*flow.Record) bool {
	s := sim.NewSampler(n, seed)
	return func(r *flow.Record) bool {
		sr := sim.Record{StartMs: r.TimeStartMs, EndMs: r.TimeEndMs, Packets: r.Packets, Bytes: r.Bytes}
		if s.Sample(&sr, &sr) == 0 {
			return false
		}
		r.TimeStartMs, r.TimeEndMs, r.Packets, r.Bytes = sr.StartMs, sr.EndMs, sr.Packets, sr.Bytes
		r.SamplingRate = n
		return true
	}
}

type simEndpoint struct {
	addr  netip.Addr
	port  uint16
	proto flow.IPProto
}

func (e simEndpoint) String() string { return fmt.Sprintf("%s:%d/%s", e.addr, e.port, e.proto) }

// TestSimulatedISP replays 12 hours of the synthetic ISP (1000
// subscribers, 3 botnets of 5 bots beaconing every 1-10 minutes with 10%
// jitter and 10% missed beats, NTP and update checkers, Zipf-popular web
// services over IPv4 and IPv6) unsampled and sampled 1:100, by thinning
// flows and by bench/sim's packet sampler. Unsampled, the candidates must
// be exactly the three C&C servers; sampled, there must be no benign
// candidate (recall is logged: at 1:100 a bot beaconing every few minutes
// leaves a handful of flows in a window).
func TestSimulatedISP(t *testing.T) {
	if testing.Short() {
		t.Skip("simulated ISP skipped in -short mode")
	}
	variants := []*simVariant{
		{name: "unsampled", keep: func(*flow.Record) bool { return true }, exact: true},
		{name: "flows 1:100", keep: thinFlows(100, 1)},
		{name: "packets 1:100", keep: samplePackets(100, 1)},
	}
	s := runSimISP(t, 12*time.Hour, 1, variants)
	truth := map[simEndpoint]time.Duration{}
	for _, b := range s.Botnets() {
		truth[simEndpoint{b.C2, b.Service.Port, flow.IPProto(b.Service.Proto)}] = b.Period
	}
	t.Logf("botnets %v", truth)
	// NTP is beaconing by construction: the default configuration's
	// built-in allowlists must cover the simulated NTP servers.
	allow, err := detect.NewBuiltinAllowlist(detect.DefaultConfig().Allowlists.Builtin)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range s.Benign() {
		m := allow.Match(flow.AddrFrom(b.Addr), b.Service.Port, b.Service.Proto)
		if b.Kind == "ntp" && !strings.HasPrefix(m, "ntp: ") {
			t.Errorf("NTP server %s:%s is not allowlisted by default (match %q)", b.Addr, b.Service, m)
		}
	}
	for _, v := range variants {
		res := v.d.Results()
		var found []string
		for _, c := range best(res) {
			e := simEndpoint{c.RemoteAddr, c.RemotePort, c.Proto}
			if p, ok := truth[e]; ok {
				found = append(found, fmt.Sprintf("%s (period %s, estimated %.1f s, score %.2f, %d/%d subscribers)", e, p, c.PeriodS, c.Score, c.BeaconingSubscribers, c.Subscribers))
				continue
			}
			t.Errorf("%s: benign candidate %s score %.3f: %s", v.name, e, c.Score, c.Explanation)
		}
		var suppressed []string
		for _, r := range res {
			for _, c := range r.Candidates {
				if c.Suppressed != "" {
					suppressed = append(suppressed, simEndpoint{c.RemoteAddr, c.RemotePort, c.Proto}.String())
				}
			}
		}
		slices.Sort(suppressed)
		t.Logf("%s: %d records, recall %d/%d: %s; suppressed by allowlists: %s", v.name, v.n, len(found), len(truth),
			strings.Join(found, "; "), strings.Join(slices.Compact(suppressed), " "))
		if v.exact && len(found) != len(truth) {
			t.Errorf("%s: found %d of %d C&C servers", v.name, len(found), len(truth))
		}
	}
}
