package detect_test

import (
	"crypto/sha256"
	"net/netip"
	"slices"
	"testing"

	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/detect/detecttest"
	"github.com/ccflow/ccflow/flow"
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

func ctu13(t testing.TB, withBotnet bool) []flow.Record { return detecttest.CTU13(t, withBotnet) }
func njrat(t testing.TB) []flow.Record                  { return detecttest.NjRAT(t) }
func aresInCTU13(t testing.TB, bg []flow.Record, clip bool) []flow.Record {
	return detecttest.AresInCTU13(t, bg, clip)
}
func njratInCTU13(t testing.TB, bg []flow.Record, clip bool) []flow.Record {
	return detecttest.NjRATInCTU13(t, bg, clip)
}
func sample(recs []flow.Record, n int, seed uint64) []flow.Record {
	return detecttest.Sample(recs, n, seed)
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
