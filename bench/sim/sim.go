package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"
)

// Botnet is one simulated botnet: part of the ground truth.
type Botnet struct {
	// ID numbers the botnet from 1.
	ID int
	// C2 is the command-and-control server address.
	C2 netip.Addr
	// Service is the C&C protocol and port.
	Service Service
	// Period is the beacon period; Jitter and Missed are the jitter (a
	// fraction of Period) and the probability of a missed beat.
	Period time.Duration
	Jitter float64
	Missed float64
	// Infected are the infected subscribers' IPv4 addresses.
	Infected []netip.Addr
}

// BenignService is a remote endpoint that many subscribers contact on a
// schedule or very often, and that is not a C&C server: what a detector must
// not report.
type BenignService struct {
	// Kind is "ntp", "update" or "dns".
	Kind string
	// Addr is the server's address.
	Addr netip.Addr
	// Service is its protocol and port.
	Service Service
	// Note says how it is used.
	Note string
}

// Entity kinds: each entity is a process with its own schedule.
const (
	kindSessions uint8 = iota + 1 // a subscriber's browsing sessions
	kindNTP                       // a subscriber's NTP client
	kindUpdate                    // a subscriber's update checker
	kindBeacon                    // an infected subscriber's bot
)

type entity struct {
	kind   uint8
	sub    int32
	ref    int32  // server or botnet index
	sport  uint16 // fixed source port, or 0 for ephemeral
	period int64  // ms
}

type event struct {
	t   int64 // ms
	ent int32
}

type subscriber struct {
	v4, v6   netip.Addr
	resolver int32
	access   uint32
}

type endpoint struct {
	v4, v6 netip.Addr
	svc    Service
}

type botnet struct {
	Botnet
	periodMs         int64
	upBytes, dnBytes uint64
	upPkts, dnPkts   uint64
	durMs            int64
}

const (
	wheelSize = 256 // seconds; more than the longest flow plus session offsets
	chunkSize = 128 // records per chunk
	uplinkIf  = 100
)

type chunk struct {
	n    int
	next *chunk
	recs [chunkSize]Record
}

type chunkList struct{ head, tail *chunk }

// Simulator is the synthetic ISP. Create it with New; it is not safe for
// concurrent use, except Stats.
type Simulator struct {
	cfg  Config
	rng  *rand.Rand
	zipf *rand.Zipf

	subs      []subscriber
	popular   []endpoint
	resolvers []endpoint
	ntp       []endpoint
	updates   []endpoint
	botnets   []botnet

	ents []entity
	heap []event

	nowMs int64 // start of the next step
	// The timing wheel holds records until the second their flow ends:
	// slot end/1000 % wheelSize is a list of chunks from a free list, so
	// memory follows the records waiting, not the busiest second seen.
	wheel    [wheelSize]chunkList
	free     *chunk
	out      []Record // the records Next returns
	activeMs int64
	meanGap  float64 // ms

	stats stats
}

type stats struct {
	generated  atomic.Uint64
	eventMs    atomic.Int64
	datagrams  atomic.Uint64
	flows      atomic.Uint64
	bytes      atomic.Uint64
	sendErrors atomic.Uint64
}

// New builds the synthetic ISP described by cfg: it numbers subscribers,
// places services and C&C servers, infects subscribers and schedules every
// process. It does no I/O.
func New(cfg Config) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid simulator configuration: %w", err)
	}
	s := &Simulator{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x63636f6e666c6f77)), // fixed second word: "cconflow"
		activeMs: cfg.ActiveTimeout.Milliseconds(),
		meanGap:  float64(cfg.SessionInterval.Milliseconds()),
	}
	s.nowMs = cfg.Start.Truncate(time.Second).UnixMilli()
	s.stats.eventMs.Store(s.nowMs)
	s.zipf = rand.NewZipf(s.rng, 1.1, 1, uint64(cfg.PopularServices-1))
	s.buildSubscribers()
	s.buildEndpoints()
	s.buildEntities()
	return s, nil
}

func (s *Simulator) buildSubscribers() {
	var p4, p6 netip.Prefix
	for _, p := range s.cfg.SubscriberPrefixes {
		p = p.Masked()
		if p.Addr().Is4() && !p4.IsValid() {
			p4 = p
		} else if p.Addr().Is6() && !p6.IsValid() {
			p6 = p
		}
	}
	base4 := p4.Addr().As4()
	b4 := uint32(base4[0])<<24 | uint32(base4[1])<<16 | uint32(base4[2])<<8 | uint32(base4[3])
	s.subs = make([]subscriber, s.cfg.Subscribers)
	for i := range s.subs {
		a := b4 + uint32(i) + 1
		sub := &s.subs[i]
		sub.v4 = netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
		if p6.IsValid() && s.rng.Float64() < s.cfg.IPv6Share {
			// A /64 per subscriber: prefix + (i+1) in bits 40..63, host ::1.
			b := p6.Addr().As16()
			n := uint32(i + 1)
			b[5] |= byte(n >> 16)
			b[6] |= byte(n >> 8)
			b[7] |= byte(n)
			b[15] = 1
			sub.v6 = netip.AddrFrom16(b)
		}
		sub.resolver = int32(s.rng.IntN(s.cfg.Resolvers))
		sub.access = 1 + uint32(i%16)
	}
}

// buildEndpoints places the named remote endpoints (distinct random
// addresses from the named pools) and the botnets.
func (s *Simulator) buildEndpoints() {
	used := map[netip.Addr]bool{}
	v4 := func() netip.Addr {
		for {
			var a netip.Addr
			switch n := s.rng.IntN(4); n {
			case 0, 1, 2:
				b := RemotePools[n].Addr().As4()
				b[3] = byte(1 + s.rng.IntN(254))
				a = netip.AddrFrom4(b)
			default: // 198.18.0.0/16
				a = netip.AddrFrom4([4]byte{198, 18, byte(s.rng.IntN(256)), byte(1 + s.rng.IntN(254))})
			}
			if !used[a] {
				used[a] = true
				return a
			}
		}
	}
	v6 := func() netip.Addr {
		// 3fff:0::/32, a random /64 and host ::1.
		b := [16]byte{0x3f, 0xff}
		n := s.rng.Uint32()
		b[4], b[5], b[6], b[7] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
		b[15] = 1
		return netip.AddrFrom16(b)
	}
	mk := func(n int, svc func(i int) Service, dual float64) []endpoint {
		eps := make([]endpoint, n)
		for i := range eps {
			eps[i] = endpoint{v4: v4(), svc: svc(i)}
			if s.rng.Float64() < dual {
				eps[i].v6 = v6()
			}
		}
		return eps
	}
	s.popular = mk(s.cfg.PopularServices, func(int) Service {
		switch u := s.rng.Float64(); {
		case u < 0.75:
			return Service{ProtoTCP, 443}
		case u < 0.85:
			return Service{ProtoTCP, 80}
		default:
			return Service{ProtoUDP, 443} // QUIC
		}
	}, 0.5)
	s.resolvers = mk(s.cfg.Resolvers, func(int) Service { return Service{ProtoUDP, 53} }, 0)
	s.ntp = mk(s.cfg.NTPServers, func(int) Service { return Service{ProtoUDP, 123} }, 0)
	s.updates = mk(s.cfg.UpdateServers, func(int) Service { return Service{ProtoTCP, 443} }, 0)

	// Botnets: distinct infected subscribers, a C&C server each.
	perm := s.rng.Perm(len(s.subs))
	s.botnets = make([]botnet, s.cfg.Botnets)
	for i := range s.botnets {
		lo, hi := s.cfg.BeaconPeriodMin.Milliseconds(), s.cfg.BeaconPeriodMax.Milliseconds()
		period := lo
		if hi > lo {
			period = lo + s.rng.Int64N(hi-lo+1)
		}
		period = period / 1000 * 1000
		if period < 1000 {
			period = 1000
		}
		svc := s.cfg.BotnetServices[i%len(s.cfg.BotnetServices)]
		b := botnet{
			Botnet: Botnet{
				ID: i + 1, C2: v4(), Service: svc, Period: time.Duration(period) * time.Millisecond,
				Jitter: s.cfg.BeaconJitter, Missed: s.cfg.MissedBeats,
			},
			periodMs: period,
			upBytes:  uint64(150 + s.rng.IntN(600)),
			dnBytes:  uint64(100 + s.rng.IntN(1500)),
			durMs:    int64(30 + s.rng.IntN(400)),
		}
		if svc.Proto == ProtoTCP {
			b.upPkts, b.dnPkts = uint64(4+s.rng.IntN(3)), uint64(3+s.rng.IntN(3))
			b.upBytes += 40 * b.upPkts
			b.dnBytes += 40 * b.dnPkts
		} else {
			b.upPkts, b.dnPkts = 1, 1
			b.upBytes = min(b.upBytes, 1400)
			b.dnBytes = min(b.dnBytes, 1400)
		}
		for k := range s.cfg.InfectedPerBotnet {
			b.Infected = append(b.Infected, s.subs[perm[i*s.cfg.InfectedPerBotnet+k]].v4)
		}
		s.botnets[i] = b
	}
}

func (s *Simulator) buildEntities() {
	start := s.nowMs
	add := func(e entity, first int64) {
		s.ents = append(s.ents, e)
		s.heap = append(s.heap, event{t: first, ent: int32(len(s.ents) - 1)})
	}
	for i := range s.subs {
		add(entity{kind: kindSessions, sub: int32(i)}, start+int64(s.rng.Float64()*2*s.meanGap))
		if s.rng.Float64() < s.cfg.NTPShare {
			period := int64(1000) << (6 + s.rng.IntN(5)) // 64 .. 1024 s
			e := entity{kind: kindNTP, sub: int32(i), ref: int32(s.rng.IntN(len(s.ntp))), period: period}
			if s.rng.IntN(2) == 0 {
				e.sport = 123 // ntpd; others (SNTP, chrony) use an ephemeral port
			} else {
				e.sport = ephemeral(s.rng)
			}
			add(e, start+s.rng.Int64N(period))
		}
		if s.rng.Float64() < s.cfg.UpdateShare {
			period := s.cfg.UpdateInterval.Milliseconds()
			add(entity{kind: kindUpdate, sub: int32(i), ref: int32(s.rng.IntN(len(s.updates))), period: period}, start+s.rng.Int64N(period))
		}
	}
	index := map[netip.Addr]int32{}
	for i := range s.subs {
		index[s.subs[i].v4] = int32(i)
	}
	for bi := range s.botnets {
		b := &s.botnets[bi]
		for _, a := range b.Infected {
			e := entity{kind: kindBeacon, sub: index[a], ref: int32(bi), period: b.periodMs}
			if b.Service.Proto == ProtoUDP {
				e.sport = ephemeral(s.rng)
			}
			add(e, start+s.rng.Int64N(b.periodMs))
		}
	}
	for i := len(s.heap)/2 - 1; i >= 0; i-- {
		s.down(i)
	}
}

func ephemeral(r *rand.Rand) uint16 { return uint16(32768 + r.IntN(28232)) }

func (s *Simulator) less(i, j int) bool {
	a, b := s.heap[i], s.heap[j]
	return a.t < b.t || (a.t == b.t && a.ent < b.ent)
}

func (s *Simulator) down(i int) {
	n := len(s.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			return
		}
		s.heap[i], s.heap[m] = s.heap[m], s.heap[i]
		i = m
	}
}

// Botnets returns the simulated botnets: the ground truth.
func (s *Simulator) Botnets() []Botnet {
	out := make([]Botnet, len(s.botnets))
	for i := range s.botnets {
		out[i] = s.botnets[i].Botnet
	}
	return out
}

// Benign returns the benign high-fan-in services: NTP servers, update
// servers and DNS resolvers.
func (s *Simulator) Benign() []BenignService {
	var out []BenignService
	for _, e := range s.ntp {
		out = append(out, BenignService{"ntp", e.v4, e.svc, "NTP server polled every 64-1024 s"})
	}
	for _, e := range s.updates {
		out = append(out, BenignService{"update", e.v4, e.svc, fmt.Sprintf("update check every %s +-%g%%", s.cfg.UpdateInterval, s.cfg.UpdateJitter*100)})
	}
	for _, e := range s.resolvers {
		out = append(out, BenignService{"dns", e.v4, e.svc, "DNS resolver"})
	}
	return out
}

// Now returns the event time (Unix ms) of the start of the next step.
func (s *Simulator) Now() int64 { return s.nowMs }

// Next simulates one second of event time and returns the records whose flows
// ended in it, in no particular order, and their export time (Unix ms, a
// whole second: the end of the step). The slice is valid until the next call.
func (s *Simulator) Next() ([]Record, int64) {
	end := s.nowMs + 1000
	for len(s.heap) > 0 && s.heap[0].t < end {
		ev := s.heap[0]
		s.heap[0].t = s.fire(ev.t, &s.ents[ev.ent])
		s.down(0)
	}
	l := &s.wheel[(s.nowMs/1000)%wheelSize]
	s.out = s.out[:0]
	for c := l.head; c != nil; {
		s.out = append(s.out, c.recs[:c.n]...)
		next := c.next
		c.n, c.next, s.free = 0, s.free, c
		c = next
	}
	l.head, l.tail = nil, nil
	s.nowMs = end
	s.stats.generated.Add(uint64(len(s.out)))
	s.stats.eventMs.Store(end)
	return s.out, end
}

// slot returns the record of the wheel for a flow ending at endMs.
func (s *Simulator) slot(endMs int64) *Record {
	l := &s.wheel[(endMs/1000)%wheelSize]
	c := l.tail
	if c == nil || c.n == chunkSize {
		nc := s.free
		if nc != nil {
			s.free = nc.next
			nc.next = nil
		} else {
			nc = new(chunk)
		}
		if c == nil {
			l.head = nc
		} else {
			c.next = nc
		}
		l.tail, c = nc, nc
	}
	c.n++
	return &c.recs[c.n-1]
}

// diurnal is the activity level at time t (mean 1 over a day, peak at 21:00
// UTC, trough at 09:00).
func diurnal(t int64) float64 {
	h := float64(t%86_400_000) / 3_600_000
	return 1 + 0.5*math.Cos(2*math.Pi*(h-21)/24)
}

// fire runs entity e's event at time t and returns its next event time.
func (s *Simulator) fire(t int64, e *entity) int64 {
	r := s.rng
	switch e.kind {
	case kindSessions:
		s.session(t, e.sub)
		// Pareto(1.5) gap with the configured mean, capped, at the
		// current diurnal activity level.
		const alpha = 1.5
		xm := s.meanGap * (alpha - 1) / alpha
		gap := xm / math.Pow(1-r.Float64(), 1/alpha)
		gap = min(gap, 30*s.meanGap) / diurnal(t)
		return t + 1 + int64(gap)
	case kindNTP:
		srv := &s.ntp[e.ref]
		sub := &s.subs[e.sub]
		sport := e.sport
		rtt := int64(5 + r.IntN(60))
		s.pair(t, t+rtt, sub, e.sub, srv.v4, sport, Service{ProtoUDP, 123}, 1, 76, 1, 76, 0, rtt)
		jit := float64(e.period) * 0.02 * (2*r.Float64() - 1)
		return t + e.period + int64(jit)
	case kindUpdate:
		srv := &s.updates[e.ref]
		sub := &s.subs[e.sub]
		up := uint64(1200 + r.IntN(600))
		dn := uint64(4000 + r.IntN(4000))
		dur := int64(200 + r.IntN(1300))
		s.pair(t, t+dur, sub, e.sub, srv.v4, ephemeral(r), srv.svc, uint64(8+r.IntN(5)), up, uint64(8+r.IntN(7)), dn, tcpSYN|tcpACK|tcpPSH|tcpFIN, int64(10+r.IntN(40)))
		jit := float64(e.period) * s.cfg.UpdateJitter * (2*r.Float64() - 1)
		return t + e.period + int64(jit)
	case kindBeacon:
		b := &s.botnets[e.ref]
		if r.Float64() >= b.Missed {
			sub := &s.subs[e.sub]
			noise := func(v uint64) uint64 { return v + uint64(float64(v)*0.05*(2*r.Float64()-1)) }
			sport := e.sport
			if sport == 0 {
				sport = ephemeral(r)
			}
			var flags uint8
			if b.Service.Proto == ProtoTCP {
				flags = tcpSYN | tcpACK | tcpPSH | tcpFIN
			}
			dur := b.durMs/2 + r.Int64N(b.durMs+1)
			s.pair(t, t+dur, sub, e.sub, b.C2, sport, b.Service, b.upPkts, noise(b.upBytes), b.dnPkts, noise(b.dnBytes), flags, int64(10+r.IntN(80)))
		}
		jit := float64(e.period) * b.Jitter * (2*r.Float64() - 1)
		return t + e.period + int64(jit)
	}
	return math.MaxInt64
}

// session emits one browsing session of subscriber i starting at t.
func (s *Simulator) session(t int64, i int32) {
	r := s.rng
	sub := &s.subs[i]
	n := 1
	if p := 1 / s.cfg.ConnectionsPerSession; p < 1 {
		n += int(math.Log(1-r.Float64()) / math.Log(1-p))
	}
	n = min(n, 64)
	at := t
	for range n {
		if r.IntN(3) == 0 {
			// A DNS lookup first (the rest are cached).
			res := &s.resolvers[sub.resolver]
			rtt := int64(2 + r.IntN(40))
			s.pair(at, at+rtt, sub, i, res.v4, ephemeral(r), res.svc, 1, uint64(60+r.IntN(40)), 1, uint64(90+r.IntN(300)), 0, rtt)
			at += rtt
		}
		var dst netip.Addr
		var svc Service
		if r.Float64() < s.cfg.LongTailShare {
			svc = Service{ProtoTCP, 443}
			if r.IntN(5) == 0 {
				svc.Port = 80
			}
			if sub.v6.IsValid() && r.IntN(2) == 0 {
				b := [16]byte{0x3f, 0xff, 0x01, byte(r.IntN(256))}
				x := r.Uint64()
				for k := 8; k < 16; k++ {
					b[k] = byte(x >> (8 * (k - 8)))
				}
				dst = netip.AddrFrom16(b)
			} else {
				x := r.Uint32()
				dst = netip.AddrFrom4([4]byte{198, 19, byte(x >> 8), byte(1 + x%254)})
			}
		} else {
			ep := &s.popular[s.zipf.Uint64()]
			svc = ep.svc
			dst = ep.v4
			if sub.v6.IsValid() && ep.v6.IsValid() {
				dst = ep.v6
			}
		}
		s.web(at, sub, i, dst, svc)
		if svc.Proto == ProtoTCP && r.IntN(3) == 0 {
			// Browsers open parallel connections to the same server.
			for k := 1 + r.IntN(4); k > 0; k-- {
				s.web(at+int64(1+r.IntN(50)), sub, i, dst, svc)
			}
		}
		at += 1 + int64(r.ExpFloat64()*300)
	}
}

// web emits one web, CDN or QUIC connection.
func (s *Simulator) web(t int64, sub *subscriber, i int32, dst netip.Addr, svc Service) {
	r := s.rng
	// Response size: Pareto(1.1) from 2 kB, capped at 20 MB; request:
	// log-normal around 700 bytes.
	dn := uint64(2000 / math.Pow(1-r.Float64(), 1/1.1))
	dn = min(dn, 20_000_000)
	up := uint64(math.Exp(math.Log(700) + 0.8*r.NormFloat64()))
	dnPkts := max(2, (dn+1399)/1400)
	upPkts := max(3, dnPkts/2+up/500)
	var flags uint8
	hdr := uint64(28)
	if svc.Proto == ProtoTCP {
		flags = tcpSYN | tcpACK | tcpPSH | tcpFIN
		if r.IntN(50) == 0 {
			flags = tcpSYN | tcpACK | tcpPSH | tcpRST
		}
		hdr = 52
	} else {
		upPkts = max(1, dnPkts/3)
	}
	if dst.Is6() {
		hdr += 20
	}
	up = max(up, upPkts*hdr)
	dn = max(dn, dnPkts*hdr)
	dur := int64(math.Exp(math.Log(1000)+r.NormFloat64())) + int64(dn/2000) // ~2 MB/s
	rtt := int64(5 + r.IntN(80))
	s.pair(t, t+dur, sub, i, dst, ephemeral(r), svc, upPkts, up, dnPkts, dn, flags, rtt)
}

// pair emits a connection's two unidirectional flows: subscriber to server
// from start to end, and the response from start+rtt to end. A one-packet
// request ends when it starts; a one-packet response starts when it ends.
func (s *Simulator) pair(start, end int64, sub *subscriber, i int32, dst netip.Addr, sport uint16, svc Service, upPkts, up, dnPkts, dn uint64, flags uint8, rtt int64) {
	if end-start > s.activeMs-1 {
		end = start + s.activeMs - 1
	}
	if rtt > end-start {
		rtt = end - start
	}
	src := sub.v4
	if dst.Is6() {
		src = sub.v6
	}
	upEnd, dnStart := end, start+rtt
	if upPkts == 1 {
		upEnd = start
	}
	if dnPkts == 1 {
		dnStart = end
	}
	*s.slot(upEnd) = Record{
		StartMs: start, EndMs: upEnd, Src: src, Dst: dst, SrcPort: sport, DstPort: svc.Port,
		Proto: svc.Proto, TCPFlags: flags, Packets: upPkts, Bytes: up, InIf: sub.access, OutIf: uplinkIf, Subscriber: i,
	}
	*s.slot(end) = Record{
		StartMs: dnStart, EndMs: end, Src: dst, Dst: src, SrcPort: svc.Port, DstPort: sport,
		Proto: svc.Proto, TCPFlags: flags, Packets: dnPkts, Bytes: dn, InIf: uplinkIf, OutIf: sub.access, Subscriber: i,
	}
}
