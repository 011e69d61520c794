package detect_test

import (
	"crypto/sha256"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ccflow/ccflow/collector/archive"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

// fakePrivacy stands in for the privacy stage in the detector's tests: it
// classifies by subscriber prefix and pseudonymizes with an unkeyed hash.
// (The real stage uses a keyed PRF; for the detector only equality of
// pseudonyms matters.)
type fakePrivacy struct{ subs []netip.Prefix }

func newFakePrivacy(cidrs ...string) *fakePrivacy {
	f := &fakePrivacy{}
	for _, c := range cidrs {
		f.subs = append(f.subs, netip.MustParsePrefix(c))
	}
	return f
}

func (f *fakePrivacy) isSub(a flow.Addr) bool {
	ip := a.Netip()
	for _, p := range f.subs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func pseudonym(a flow.Addr) flow.Pseudonym {
	h := sha256.Sum256(a[:])
	var p flow.Pseudonym
	copy(p[:], h[:16])
	return p
}

func (f *fakePrivacy) pseudonymize(recs []flow.Record) []flow.Pseudo {
	out := make([]flow.Pseudo, 0, len(recs))
	for i := range recs {
		r := &recs[i]
		src, dst := r.SrcAddr.Addr(), r.DstAddr.Addr()
		p := flow.Pseudo{
			TimeStartMs: r.TimeStartMs, TimeEndMs: r.TimeEndMs, Protocol: r.Protocol,
			Proto: r.Proto, TCPFlags: r.TCPFlags, Bytes: r.Bytes, Packets: r.Packets,
			SamplingRate: r.SamplingRate, Epoch: 1,
		}
		ss, ds := f.isSub(src), f.isSub(dst)
		switch {
		case ss && !ds:
			p.Kind, p.Direction = flow.KindSubscriber, flow.DirOutbound
			p.Sub, p.SubPort, p.Remote, p.RemotePort = pseudonym(src), r.SrcPort, dst, r.DstPort
		case ds && !ss:
			p.Kind, p.Direction = flow.KindSubscriber, flow.DirInbound
			p.Sub, p.SubPort, p.Remote, p.RemotePort = pseudonym(dst), r.DstPort, src, r.SrcPort
		case ss && ds:
			p.Kind, p.Direction = flow.KindBoth, flow.DirOutbound
			p.Sub, p.Peer = pseudonym(src), pseudonym(dst)
		default:
			p.Kind, p.Remote, p.TransitSrc = flow.KindTransit, dst, src
		}
		out = append(out, p)
	}
	return out
}

// load reads an archive, dropping rows whose label contains drop (if set).
func load(t testing.TB, format archive.Format, drop string, path ...string) []flow.Record {
	t.Helper()
	r, err := archive.Open(testenv.Data(t, path...), format, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	recs, labels, err := archive.ReadAll(r, true)
	if err != nil {
		t.Fatal(err)
	}
	if drop == "" {
		return recs
	}
	out := recs[:0]
	for i := range recs {
		if !strings.Contains(labels[i], drop) {
			out = append(out, recs[i])
		}
	}
	return out
}

func ctu13(t testing.TB, withBotnet bool) []flow.Record {
	drop := "Botnet"
	if withBotnet {
		drop = ""
	}
	return load(t, archive.FormatBinetflow, drop, "ctu13-s11-rbot", "capture20110818-2.binetflow.gz")
}

func njrat(t testing.TB) []flow.Record {
	return load(t, archive.FormatZeek, "", "njrat-zeek", "labeled-conn.log.gz")
}

func ares(t testing.TB) []flow.Record {
	return load(t, archive.FormatCICFlowMeter, "", "cicids2017-ares", "Botnet_736.csv")
}

func addr(s string) flow.Addr { return flow.AddrFrom(netip.MustParseAddr(s)) }

func span(recs []flow.Record) (lo, hi int64) {
	lo, hi = recs[0].TimeStartMs, recs[0].TimeStartMs
	for _, r := range recs {
		lo, hi = min(lo, r.TimeStartMs), max(hi, r.TimeStartMs)
	}
	return lo, hi
}

// inject remaps the addresses of recs (old → new, both sides) and shifts
// their times by shift ms, keeping only records that then start within
// [lo, hi].
func inject(recs []flow.Record, remap map[string]string, shift, lo, hi int64) []flow.Record {
	m := map[flow.Addr]flow.Addr{}
	for k, v := range remap {
		m[addr(k)] = addr(v)
	}
	var out []flow.Record
	for _, r := range recs {
		r.TimeStartMs += shift
		r.TimeEndMs += shift
		r.TimeReceivedMs += shift
		if r.TimeStartMs < lo || r.TimeStartMs > hi {
			continue
		}
		if n, ok := m[r.SrcAddr.Addr()]; ok {
			r.SrcAddr = flow.RawAddr(n)
		}
		if n, ok := m[r.DstAddr.Addr()]; ok {
			r.DstAddr = flow.RawAddr(n)
		}
		out = append(out, r)
	}
	return out
}

// aresBots maps the five Ares bots into the CTU-13 subscriber prefix, to
// addresses that do not occur in the CTU-13 capture.
var aresBots = map[string]string{
	"192.168.10.5": "147.32.99.5", "192.168.10.8": "147.32.99.8", "192.168.10.9": "147.32.99.9",
	"192.168.10.14": "147.32.99.14", "192.168.10.15": "147.32.99.15",
}

// aresInCTU13 is the Ares fan-in injected into the CTU-13 background, the
// bots' addresses remapped into 147.32.0.0/16. With clip, Ares's last 16
// minutes (when all five bots run, from 13:45:50) are shifted onto the 16
// minutes of the CTU-13 capture and the rest dropped (the acceptance
// test); without, the whole hour is shifted to begin with the background
// (the sampling study, where 16 minutes at 1:10 leave a handful of flows
// per bot).
func aresInCTU13(t testing.TB, bg []flow.Record, clip bool) []flow.Record {
	lo, hi := span(bg)
	if !clip {
		a := ares(t)
		alo, _ := span(a)
		return inject(a, aresBots, lo-alo, lo, math.MaxInt64)
	}
	aresFrom := time.Date(2017, 7, 7, 13, 45, 50, 0, time.UTC).UnixMilli()
	return inject(ares(t), aresBots, lo-aresFrom, lo, hi)
}

// njratInCTU13 is the NjRAT capture injected likewise: the infected host
// remapped to 147.32.98.115 and the capture's first flow shifted onto the
// start of CTU-13; with clip, flows after the background's end are
// dropped, without, all 50 minutes are kept.
func njratInCTU13(t testing.TB, bg []flow.Record, clip bool) []flow.Record {
	lo, hi := span(bg)
	nj := njrat(t)
	nlo, _ := span(nj)
	if !clip {
		hi = math.MaxInt64
	}
	return inject(nj, map[string]string{"192.168.1.115": "147.32.98.115"}, lo-nlo, lo, hi)
}

// sample thins records 1:n with a seeded generator and marks the rate, as
// `ccflow replay --sample` does.
func sample(recs []flow.Record, n int, seed uint64) []flow.Record {
	if n <= 1 {
		return recs
	}
	r := rand.New(rand.NewPCG(seed, 0x5a5a))
	var out []flow.Record
	for _, rec := range recs {
		if r.IntN(n) == 0 {
			rec.SamplingRate = uint32(n)
			out = append(out, rec)
		}
	}
	return out
}

// run replays records in start-time order through the fake privacy stage
// and a detector, and returns the reported candidates of all windows.
func run(t testing.TB, cfg detect.Config, priv *fakePrivacy, recs []flow.Record, mutate func([]flow.Pseudo)) ([]flow.Candidate, []detect.Result) {
	t.Helper()
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b flow.Record) int { return int(a.TimeStartMs - b.TimeStartMs) })
	allow, err := detect.NewBuiltinAllowlist(cfg.Allowlists.Builtin)
	if err != nil {
		t.Fatal(err)
	}
	d, err := detect.New(cfg, detect.Deps{Allowlist: allow})
	if err != nil {
		t.Fatal(err)
	}
	ps := priv.pseudonymize(recs)
	if mutate != nil {
		mutate(ps)
	}
	for i := 0; i < len(ps); i += 512 {
		d.Observe(ps[i:min(len(ps), i+512)])
	}
	d.Flush()
	res := d.Results()
	return best(res), res
}

// best returns the reported candidates of all windows, one per endpoint
// (its best-scoring window), best first, as `ccflow eval` ranks them.
func best(res []detect.Result) []flow.Candidate {
	type key struct {
		a    netip.Addr
		port uint16
		p    flow.IPProto
	}
	m := map[key]flow.Candidate{}
	for _, r := range res {
		for _, c := range r.Candidates {
			if c.Suppressed != "" {
				continue
			}
			k := key{c.RemoteAddr, c.RemotePort, c.Proto}
			if o, ok := m[k]; !ok || c.Score > o.Score {
				m[k] = c
			}
		}
	}
	out := make([]flow.Candidate, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b flow.Candidate) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return a.RemoteAddr.Compare(b.RemoteAddr)
	})
	return out
}

func logCandidates(t testing.TB, cands []flow.Candidate) {
	t.Helper()
	for i, c := range cands {
		t.Logf("#%d %s:%d/%s score %.3f period %.2f s subs %d/%d flows %d: %s", i+1, c.RemoteAddr, c.RemotePort, c.Proto, c.Score, c.PeriodS, c.BeaconingSubscribers, c.Subscribers, c.Flows, c.Explanation)
	}
}
