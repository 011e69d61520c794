// Package flowtest generates realistic pseudonymized flows for tests and
// benchmarks of the stages that carry or store them (bus, sinks, detector).
//
// The flows look like an ISP's: a population of subscribers (with keyed-
// looking random pseudonyms) talking to a Zipf-distributed set of remote
// endpoints, mostly on 443 and 80, with event times that advance like a
// router's export stream, heavy-tailed byte counts, enrichment that belongs
// to the endpoint, and a few subscriber-to-subscriber and transit flows. The
// output is deterministic for a seed. It is test support, not production
// code, and depends only on flow.
package flowtest

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net/netip"

	"github.com/ccflow/ccflow/flow"
)

// Options shape the generated population. Zero fields take the defaults of
// DefaultOptions.
type Options struct {
	// Subscribers is the number of distinct subscriber pseudonyms.
	Subscribers int
	// Endpoints is the number of distinct remote endpoints.
	Endpoints int
	// StartMs is the event time of the first flow (Unix ms).
	StartMs int64
	// FlowsPerSecond sets how fast event time advances between flows.
	FlowsPerSecond int
}

// DefaultOptions returns 20,000 subscribers, 50,000 endpoints and 100,000
// flows per second of event time.
func DefaultOptions() Options {
	return Options{Subscribers: 20_000, Endpoints: 50_000, StartMs: 1_760_000_000_000, FlowsPerSecond: 100_000}
}

// Generator produces flows from one population. It is not safe for
// concurrent use.
type Generator struct {
	o     Options
	r     *rand.Rand
	zipf  *rand.Zipf
	subs  []flow.Pseudonym
	ends  []endpoint
	exps  []flow.Addr
	n     int64
	names []string
}

type endpoint struct {
	addr    flow.Addr
	port    uint16
	proto   uint8
	asn     uint32
	org     string
	country string
	prov    string
	intel   string
}

// New returns a Generator for seed and options o.
func New(seed uint64, o Options) *Generator {
	d := DefaultOptions()
	if o.Subscribers <= 0 {
		o.Subscribers = d.Subscribers
	}
	if o.Endpoints <= 0 {
		o.Endpoints = d.Endpoints
	}
	if o.StartMs == 0 {
		o.StartMs = d.StartMs
	}
	if o.FlowsPerSecond <= 0 {
		o.FlowsPerSecond = d.FlowsPerSecond
	}
	r := rand.New(rand.NewPCG(seed, 0x63636f77))
	g := &Generator{o: o, r: r, zipf: rand.NewZipf(r, 1.1, 4, uint64(o.Endpoints-1))}
	g.subs = make([]flow.Pseudonym, o.Subscribers)
	for i := range g.subs {
		binary.LittleEndian.PutUint64(g.subs[i][:], r.Uint64())
		binary.LittleEndian.PutUint64(g.subs[i][8:], r.Uint64())
	}
	orgs := []struct {
		asn           uint32
		org, cc, prov string
	}{
		{15169, "GOOGLE", "US", "cloud"}, {16509, "AMAZON-02", "US", "cloud"}, {13335, "CLOUDFLARENET", "US", "cdn"},
		{24940, "Hetzner Online GmbH", "DE", "cloud"}, {16276, "OVH SAS", "FR", "cloud"}, {3320, "Deutsche Telekom AG", "DE", ""},
		{714, "APPLE-ENGINEERING", "US", "push"}, {8075, "MICROSOFT-CORP-MSN-AS-BLOCK", "US", "cloud"}, {0, "", "", ""},
		{49505, "JSC Selectel", "RU", ""}, {4134, "Chinanet", "CN", ""},
	}
	g.ends = make([]endpoint, o.Endpoints)
	for i := range g.ends {
		o := orgs[r.IntN(len(orgs))]
		var a netip.Addr
		if r.IntN(10) == 0 {
			var b [16]byte
			b[0], b[1], b[2], b[3] = 0x2a, 0x00, byte(r.IntN(256)), byte(r.IntN(256))
			binary.LittleEndian.PutUint64(b[8:], r.Uint64())
			a = netip.AddrFrom16(b)
		} else {
			a = netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(1 + r.IntN(254))})
		}
		e := endpoint{addr: flow.AddrFrom(a), port: 443, proto: 6, asn: o.asn, org: o.org, country: o.cc, prov: o.prov}
		switch p := r.IntN(20); {
		case p < 4:
			e.port = 80
		case p == 4:
			e.port, e.proto = 53, 17
		case p == 5:
			e.port, e.proto = 443, 17
		case p == 6:
			e.port = uint16(1024 + r.IntN(60000))
		}
		if r.IntN(200) == 0 {
			e.intel = "feodo"
			if r.IntN(3) == 0 {
				e.intel = "feodo,sslbl"
			}
		}
		g.ends[i] = e
	}
	g.exps = []flow.Addr{
		flow.AddrFrom(netip.MustParseAddr("192.0.2.1")), flow.AddrFrom(netip.MustParseAddr("192.0.2.2")),
		flow.AddrFrom(netip.MustParseAddr("192.0.2.3")), flow.AddrFrom(netip.MustParseAddr("2001:db8::1")),
	}
	g.names = []string{"edge-fra1", "edge-fra2", "edge-ber1", "edge-ham1"}
	return g
}

// Next fills f with the next flow.
func (g *Generator) Next(f *flow.Pseudo) {
	r := g.r
	g.n++
	ex := r.IntN(len(g.exps))
	e := &g.ends[g.zipf.Uint64()]
	start := g.o.StartMs + g.n*1000/int64(g.o.FlowsPerSecond) - int64(r.IntN(2000))
	dur := int64(r.ExpFloat64() * 8000)
	bytes := uint64(math.Exp(r.NormFloat64()*1.8+7)) + 40
	pkts := bytes/900 + 1
	*f = flow.Pseudo{
		TimeStartMs:   start,
		TimeEndMs:     start + dur,
		Protocol:      flow.ProtocolIPFIX,
		Exporter:      g.exps[ex],
		ObsDomain:     uint32(ex),
		InIf:          uint32(1 + r.IntN(4)),
		OutIf:         uint32(9 + r.IntN(2)),
		Kind:          flow.KindSubscriber,
		Direction:     flow.DirOutbound,
		Epoch:         2900,
		Sub:           g.subs[r.IntN(len(g.subs))],
		SubPort:       uint16(32768 + r.IntN(28232)),
		Remote:        e.addr,
		RemotePort:    e.port,
		Proto:         e.proto,
		Bytes:         bytes,
		Packets:       pkts,
		SamplingRate:  1,
		RemoteASN:     e.asn,
		RemoteASOrg:   e.org,
		RemoteCountry: e.country,
		Provider:      e.prov,
		Intel:         e.intel,
		ExporterName:  g.names[ex],
	}
	if e.proto == 6 {
		f.TCPFlags = 0x1b
	}
	if r.IntN(3) == 0 {
		f.Direction = flow.DirInbound
	}
	switch r.IntN(200) {
	case 0:
		f.Kind, f.Peer, f.PeerPort = flow.KindBoth, g.subs[r.IntN(len(g.subs))], 22
		f.Remote, f.RemotePort, f.Direction = flow.Addr{}, 0, flow.DirOutbound
		f.RemoteASN, f.RemoteASOrg, f.RemoteCountry, f.Provider, f.Intel = 0, "", "", "", ""
	case 1:
		f.Kind, f.Sub, f.SubPort, f.Direction = flow.KindTransit, flow.Pseudonym{}, 0, flow.DirUnknown
		f.TransitSrc, f.TransitSrcPort = g.ends[r.IntN(len(g.ends))].addr, uint16(1024+r.IntN(60000))
	}
}

// Flows returns the next n flows.
func (g *Generator) Flows(n int) []flow.Pseudo {
	out := make([]flow.Pseudo, n)
	for i := range out {
		g.Next(&out[i])
	}
	return out
}

// Flows returns n flows of the default population for seed.
func Flows(seed uint64, n int) []flow.Pseudo { return New(seed, Options{}).Flows(n) }
