package detect_test

import (
	"fmt"
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

// simISP generates d of event time of the default synthetic ISP (seed 1)
// and returns its records as flow.Records, and the simulator for its
// truth.
func simISP(t testing.TB, d time.Duration) ([]flow.Record, *sim.Simulator) {
	return simISPSeed(t, d, 1)
}

func simISPSeed(t testing.TB, d time.Duration, seed uint64) ([]flow.Record, *sim.Simulator) {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.Seed = seed
	cfg.Start = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []flow.Record
	for range int(d / time.Second) {
		recs, _ := s.Next()
		for i := range recs {
			out = append(out, simRecord(&recs[i]))
		}
	}
	return out, s
}

func simRecord(r *sim.Record) flow.Record {
	return flow.Record{
		TimeStartMs: r.StartMs, TimeEndMs: r.EndMs, TimeReceivedMs: r.EndMs,
		SrcAddr: flow.RawAddr(flow.AddrFrom(r.Src)), DstAddr: flow.RawAddr(flow.AddrFrom(r.Dst)),
		SrcPort: r.SrcPort, DstPort: r.DstPort, Proto: r.Proto, TCPFlags: r.TCPFlags,
		Bytes: r.Bytes, Packets: r.Packets, SamplingRate: 1, InIf: r.InIf, OutIf: r.OutIf,
	}
}

// packetSample applies bench/sim's 1:n packet sampler to the records, as
// `ccflow simulate --sampling n` does at the routers: a flow is exported
// when one of its packets is selected, with the selected packets' counts.
func packetSample(recs []flow.Record, n uint32, seed uint64) []flow.Record {
	s := sim.NewSampler(n, seed)
	var out []flow.Record
	for _, r := range recs {
		sr := sim.Record{StartMs: r.TimeStartMs, EndMs: r.TimeEndMs, Packets: r.Packets, Bytes: r.Bytes}
		if s.Sample(&sr, &sr) == 0 {
			continue
		}
		r.TimeStartMs, r.TimeEndMs, r.Packets, r.Bytes = sr.StartMs, sr.EndMs, sr.Packets, sr.Bytes
		r.SamplingRate = n
		out = append(out, r)
	}
	return out
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
	recs, s := simISP(t, 12*time.Hour)
	truth := map[simEndpoint]time.Duration{}
	for _, b := range s.Botnets() {
		truth[simEndpoint{b.C2, b.Service.Port, flow.IPProto(b.Service.Proto)}] = b.Period
	}
	t.Logf("%d records; botnets %v", len(recs), truth)
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
	for _, tc := range []struct {
		name string
		recs func() []flow.Record
		// exact: the candidates must be the C&C servers, all of them.
		exact bool
	}{
		{"unsampled", func() []flow.Record { return recs }, true},
		{"flows 1:100", func() []flow.Record { return sample(recs, 100, 1) }, false},
		{"packets 1:100", func() []flow.Record { return packetSample(recs, 100, 1) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.recs()
			cands, res := run(t, detect.DefaultConfig(), newFakePrivacy("100.64.0.0/10", "2001:db8::/32"), in, nil)
			var found []string
			for _, c := range cands {
				e := simEndpoint{c.RemoteAddr, c.RemotePort, c.Proto}
				if p, ok := truth[e]; ok {
					found = append(found, fmt.Sprintf("%s (period %s, estimated %.1f s, score %.2f, %d/%d subscribers)", e, p, c.PeriodS, c.Score, c.BeaconingSubscribers, c.Subscribers))
					continue
				}
				t.Errorf("benign candidate %s score %.3f: %s", e, c.Score, c.Explanation)
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
			t.Logf("%s: %d records, recall %d/%d: %s; suppressed by allowlists: %s", tc.name, len(in), len(found), len(truth),
				strings.Join(found, "; "), strings.Join(slices.Compact(suppressed), " "))
			if tc.exact && len(found) != len(truth) {
				t.Errorf("found %d of %d C&C servers", len(found), len(truth))
			}
		})
	}
}
