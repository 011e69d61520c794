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
//
// By default the flows come from connections, as a router meters them: a
// connection is two unidirectional flows (the subscriber's request and the
// response) exported together, and a subscriber's connections come in
// sessions (a burst of them, a third preceded by a lookup at the
// subscriber's DNS resolver, a third with parallel connections to the same
// server), 12,000 sessions at a time by default. That is what makes a
// subscriber's pseudonym repeat within a message, as in bench/sim's ISP
// model (3.3 flows per subscriber in each partition's share of a 64k-flow
// batch at 8 partitions; 3.8 here). Options.Uniform draws every flow on its own
// instead (subscriber, endpoint and sizes independent): the worst case for
// compression.
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
	// ActiveSessions is how many subscriber sessions are under way at a
	// time; each next connection belongs to one of them, at random.
	ActiveSessions int
	// ConnectionsPerSession is the mean number of connections of a
	// session (geometric).
	ConnectionsPerSession float64
	// Uniform draws every flow independently (no connections, sessions
	// or resolvers).
	Uniform bool
}

// DefaultOptions returns 20,000 subscribers, 50,000 endpoints, 100,000
// flows per second of event time, and 12,000 active sessions of 8
// connections on average.
func DefaultOptions() Options {
	return Options{Subscribers: 20_000, Endpoints: 50_000, StartMs: 1_760_000_000_000, FlowsPerSecond: 100_000,
		ActiveSessions: 12_000, ConnectionsPerSession: 8}
}

// Generator produces flows from one population. It is not safe for
// concurrent use.
type Generator struct {
	o     Options
	r     *rand.Rand
	zipf  *rand.Zipf
	subs  []flow.Pseudonym
	ends  []endpoint
	dns   []endpoint
	exps  []flow.Addr
	n     int64
	names []string

	sessions []session
	pending  []flow.Pseudo // flows of the current connection(s), next first
}

// session is one subscriber's burst of connections.
type session struct {
	sub      int
	left     int // connections still to come
	resolver int
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
	if o.ActiveSessions <= 0 {
		o.ActiveSessions = d.ActiveSessions
	}
	if o.ConnectionsPerSession < 1 {
		o.ConnectionsPerSession = d.ConnectionsPerSession
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
	for i := range 4 {
		g.dns = append(g.dns, endpoint{addr: flow.AddrFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(53 + i)})),
			port: 53, proto: 17, asn: 64500, org: "EXAMPLE-ISP", country: "DE", prov: "isp"})
	}
	g.sessions = make([]session, o.ActiveSessions)
	for i := range g.sessions {
		g.newSession(&g.sessions[i])
	}
	return g
}

func (g *Generator) newSession(s *session) {
	s.sub = g.r.IntN(len(g.subs))
	s.resolver = s.sub % len(g.dns)
	// Geometric number of connections, at least one.
	p := 1 / g.o.ConnectionsPerSession
	s.left = 1
	if p < 1 {
		s.left += int(math.Log(1-g.r.Float64()) / math.Log(1-p))
	}
}

// Next fills f with the next flow.
func (g *Generator) Next(f *flow.Pseudo) {
	if g.o.Uniform {
		g.uniform(f)
		return
	}
	if len(g.pending) == 0 {
		g.connections()
	}
	*f = g.pending[0]
	g.pending = g.pending[1:]
}

// connections queues the flows of the next connection of a random active
// session: a DNS lookup, or one or more connections to one endpoint.
func (g *Generator) connections() {
	r := g.r
	s := &g.sessions[r.IntN(len(g.sessions))]
	if s.left <= 0 {
		g.newSession(s)
	}
	s.left--
	sub := g.subs[s.sub]
	ex := s.sub % len(g.exps)
	g.pending = g.pending[:0]
	if r.IntN(3) == 0 {
		e := &g.dns[s.resolver]
		g.pair(sub, ex, e, 60+uint64(r.IntN(40)), 90+uint64(r.IntN(300)))
		return
	}
	e := &g.ends[g.zipf.Uint64()]
	n := 1
	if e.proto == 6 && r.IntN(3) == 0 {
		n += 1 + r.IntN(4) // parallel connections to the same server
	}
	for range n {
		// Request log-normal around 700 B; response Pareto from 2 kB.
		up := uint64(math.Exp(math.Log(700)+0.8*r.NormFloat64())) + 40
		dn := uint64(2000/math.Pow(1-r.Float64(), 1/1.1)) + 40
		g.pair(sub, ex, e, up, min(dn, 20_000_000))
	}
}

// pair queues the two flows of one connection of sub to e (request and
// response, exported together), with some subscriber-to-subscriber and
// transit flows mixed in.
func (g *Generator) pair(sub flow.Pseudonym, ex int, e *endpoint, up, dn uint64) {
	r := g.r
	g.n += 2
	start := g.o.StartMs + g.n*1000/int64(g.o.FlowsPerSecond) - int64(r.IntN(2000))
	dur := int64(math.Exp(math.Log(1000) + r.NormFloat64()))
	rtt := int64(5 + r.IntN(80))
	f := flow.Pseudo{
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
		Sub:           sub,
		SubPort:       uint16(32768 + r.IntN(28232)),
		Remote:        e.addr,
		RemotePort:    e.port,
		Proto:         e.proto,
		Bytes:         up,
		Packets:       up/900 + 1,
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
	back := f
	back.Direction, back.TimeStartMs, back.Bytes, back.Packets = flow.DirInbound, min(start+rtt, f.TimeEndMs), dn, dn/1400+1
	back.InIf, back.OutIf = f.OutIf, f.InIf
	switch r.IntN(200) {
	case 0:
		f.Kind, f.Peer, f.PeerPort = flow.KindBoth, g.subs[r.IntN(len(g.subs))], 22
		f.Remote, f.RemotePort, f.Direction = flow.Addr{}, 0, flow.DirOutbound
		f.RemoteASN, f.RemoteASOrg, f.RemoteCountry, f.Provider, f.Intel = 0, "", "", "", ""
		back = f
		back.Sub, back.Peer, back.SubPort, back.PeerPort = f.Peer, f.Sub, f.PeerPort, f.SubPort
	case 1:
		f.Kind, f.Sub, f.SubPort, f.Direction = flow.KindTransit, flow.Pseudonym{}, 0, flow.DirUnknown
		f.TransitSrc, f.TransitSrcPort = g.ends[r.IntN(len(g.ends))].addr, uint16(1024+r.IntN(60000))
		back = f
	}
	g.pending = append(g.pending, f, back)
}

// uniform fills f with a flow drawn independently of all others.
func (g *Generator) uniform(f *flow.Pseudo) {
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
