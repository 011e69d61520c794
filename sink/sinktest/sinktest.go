// Package sinktest makes deterministic test data for the sinks: flow
// batches, pair scores and candidates with every field set, spread over
// remote endpoints, subscribers and days. It is for tests only.
package sinktest

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/ccflow/ccflow/flow"
)

// Endpoint is the remote endpoint that every data set features, so that
// the analyst queries of docs/queries.md find it.
var Endpoint = netip.MustParseAddr("198.51.100.23")

// EndpointPort is Endpoint's port.
const EndpointPort = 8443

// BatchID returns the batch ID of batch number i of producer p.
func BatchID(p, i uint64) flow.BatchID {
	var id flow.BatchID
	binary.BigEndian.PutUint64(id[:8], p+1)
	binary.BigEndian.PutUint64(id[8:], i+1)
	return id
}

func pseudonym(i int) flow.Pseudonym {
	var p flow.Pseudonym
	binary.BigEndian.PutUint64(p[:8], 0x5eed0000+uint64(i))
	binary.BigEndian.PutUint64(p[8:], uint64(i)*0x9e3779b97f4a7c15)
	return p
}

var (
	orgs      = []string{"Example Hosting", "Bulletproof Ltd", "", "CloudCo"}
	countries = []string{"NL", "RU", "", "US"}
	providers = []string{"", "", "cloud", "cdn"}
	intels    = []string{"", "feodo", "", "feodo,spamhaus-drop"}
)

// Flows returns n flows in batches of size per batch (the last may be
// shorter), starting at start and one second apart, from producer p. Every
// fourth flow goes to Endpoint; flow i carries i in Bytes so that a test
// can spot a lost or doubled row.
func Flows(p uint64, n, per int, start time.Time) []flow.Batch {
	var out []flow.Batch
	for i := 0; i < n; i++ {
		if i%per == 0 {
			out = append(out, flow.Batch{ID: BatchID(p, uint64(len(out)))})
		}
		b := &out[len(out)-1]
		t := start.Add(time.Duration(i) * time.Second).UnixMilli()
		remote := netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 50)})
		port := uint16(443 + i%7)
		if i%4 == 0 {
			remote, port = Endpoint, EndpointPort
		}
		f := flow.Pseudo{
			TimeStartMs: t, TimeEndMs: t + int64(i%3000),
			Protocol: flow.Protocol(1 + i%5), Exporter: flow.AddrFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i%3)})),
			ObsDomain: uint32(i % 4), InIf: uint32(i % 16), OutIf: uint32(i % 8),
			Kind: flow.KindSubscriber, Direction: flow.Dir(1 + i%2), Epoch: uint32(20000 + i/1000),
			Sub: pseudonym(i % 37), SubPort: uint16(40000 + i%1000),
			Remote: flow.AddrFrom(remote), RemotePort: port,
			Proto: 6, TCPFlags: uint8(i), Bytes: uint64(i), Packets: uint64(1 + i%9), SamplingRate: uint32(1 + i%2*999),
			RemoteASN: uint32(64496 + i%4), RemoteASOrg: orgs[i%4], RemoteCountry: countries[i%4], Provider: providers[i%4],
			Intel: intels[i%4], ExporterName: fmt.Sprintf("edge-%d", 1+i%3), InIfName: fmt.Sprintf("xe-0/0/%d", i%16), OutIfName: "",
		}
		switch i % 23 {
		case 5: // both sides are subscribers
			f.Kind, f.Direction, f.Remote, f.RemotePort = flow.KindBoth, flow.DirOutbound, flow.Addr{}, 0
			f.Peer, f.PeerPort = pseudonym(i%11+100), uint16(i%60000)
		case 7: // transit
			f.Kind, f.Direction, f.Sub, f.SubPort = flow.KindTransit, flow.DirUnknown, flow.Pseudonym{}, 0
			f.TransitSrc, f.TransitSrcPort = flow.AddrFrom(netip.MustParseAddr("2001:db8::17")), 5353
		case 11: // IPv6 remote
			f.Remote = flow.AddrFrom(netip.MustParseAddr("2001:db8:beef::1"))
		}
		b.Flows = append(b.Flows, f)
	}
	return out
}

// Components returns score components derived from i.
func Components(i int) flow.Components {
	x := float64(i%10) / 10
	return flow.Components{Beacon: x, Skew: 1 - x, MADM: x / 2, Size: 0.5, Count: 1, Coverage: x, Period: 0.9,
		FanIn: x / 3, Popularity: 0.1, Intel: float64(i % 2), Provider: 0}
}

// Candidates returns n candidates in windows of one hour from start; the
// first of every window is Endpoint, with the highest score.
func Candidates(n int, start time.Time) []flow.Candidate {
	var out []flow.Candidate
	for i := 0; i < n; i++ {
		ws := start.Add(time.Duration(i/5) * time.Hour).UTC()
		addr, port, score := netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i%50)}), uint16(4000+i%9), 0.5+float64(i%5)/20
		var intel []string
		if i%5 == 0 {
			addr, port, score, intel = Endpoint, EndpointPort, 0.97, []string{"feodo"}
		} else if i%3 == 0 {
			intel = []string{"feodo", "spamhaus-drop"}
		}
		out = append(out, flow.Candidate{
			RemoteAddr: addr, RemotePort: port, Proto: 6, WindowStart: ws, WindowEnd: ws.Add(time.Hour),
			Score: score, Components: Components(i), PeriodS: 60 + float64(i%4), JitterS: 1.5,
			Subscribers: 3 + i%7, BeaconingSubscribers: 2 + i%5, Flows: int64(100 + i), Bytes: uint64(1000 * i),
			SamplingRate: 1000, FirstSeen: ws.Add(time.Minute), LastSeen: ws.Add(59 * time.Minute),
			Suppressed: []string{"", "", "", "", "ntp"}[i%5], Explanation: fmt.Sprintf("beacons every %ds to %d subscribers", 60+i%4, 3+i%7),
			ASN: uint32(64496 + i%4), ASOrg: orgs[i%4], Country: countries[i%4], Intel: intel, ModelVersion: "test-1",
		})
	}
	return out
}

// Pairs returns n pair scores in windows of one hour from start; a third
// of them are pairs with Endpoint.
func Pairs(n int, start time.Time) []flow.PairScore {
	var out []flow.PairScore
	for i := 0; i < n; i++ {
		ws := start.Add(time.Duration(i/10) * time.Hour).UTC()
		addr, port := netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i%50)}), uint16(4000+i%9)
		if i%3 == 0 {
			addr, port = Endpoint, EndpointPort
		}
		out = append(out, flow.PairScore{
			WindowStart: ws, WindowEnd: ws.Add(time.Hour), Epoch: 20000, Sub: pseudonym(i % 37),
			RemoteAddr: addr, RemotePort: port, Proto: 6, Score: 0.4 + float64(i%6)/10, Components: Components(i),
			PeriodS: 60, JitterS: 2, Flows: int64(10 + i), Bytes: uint64(500 * i),
			FirstSeen: ws.Add(time.Minute), LastSeen: ws.Add(58 * time.Minute), SamplingRate: 1000, ModelVersion: "test-1",
			Evidence: []string{flow.EvidenceBeaconing, flow.EvidenceOwn, flow.EvidenceContact, flow.EvidenceBeaconing}[i/3%4],
		})
	}
	return out
}

// Spread returns n flows in batches of size per batch, like Flows, but with
// the spread of an ISP's traffic instead of Flows' short cycles, so that
// file sizes and encoding costs measured with it are not flattered by
// repetition: start times about 5000 flows per second apart with up to a
// minute of jitter (an exporter's active timeout), durations up to a minute,
// 50k subscribers and 200k remote addresses drawn with a Zipf skew,
// ephemeral subscriber ports, heavy-tailed byte and packet counts, 8
// exporters with 64 interfaces each, about 2000 AS numbers and 150
// countries. It is deterministic for a given seed; Bytes does not number
// the flows.
func Spread(seed uint64, n, per int, start time.Time) []flow.Batch {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	subs := rand.NewZipf(r, 1.1, 4, 50_000-1)
	remotes := rand.NewZipf(r, 1.2, 4, 200_000-1)
	t0 := start.UnixMilli()
	var out []flow.Batch
	for i := 0; i < n; i++ {
		if i%per == 0 {
			out = append(out, flow.Batch{ID: BatchID(seed, uint64(len(out)))})
		}
		b := &out[len(out)-1]
		ts := t0 + int64(i)/5 - r.Int64N(60_000)
		rem := int(remotes.Uint64())
		remote := netip.AddrFrom4([4]byte{byte(1 + rem>>16), byte(rem >> 8), byte(rem), byte(rem * 7)})
		exp := r.IntN(8)
		asn := uint32(64496 + rem%2000)
		f := flow.Pseudo{
			TimeStartMs: ts, TimeEndMs: ts + r.Int64N(60_000),
			Protocol: flow.ProtocolNetFlow9, Exporter: flow.AddrFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + exp)})),
			ObsDomain: uint32(exp), InIf: uint32(r.IntN(64)), OutIf: uint32(r.IntN(64)),
			Kind: flow.KindSubscriber, Direction: flow.Dir(1 + r.IntN(2)), Epoch: 20000,
			Sub: pseudonym(int(subs.Uint64())), SubPort: uint16(1024 + r.IntN(64_512)),
			Remote: flow.AddrFrom(remote), RemotePort: []uint16{443, 443, 443, 80, 53, 123, 8443, uint16(r.IntN(65_536))}[r.IntN(8)],
			Proto: []uint8{6, 6, 6, 17, 17, 1}[r.IntN(6)], TCPFlags: []uint8{0x02, 0x12, 0x10, 0x18, 0x19, 0x1b, 0x11}[r.IntN(7)],
			Bytes: uint64(40 + r.ExpFloat64()*r.ExpFloat64()*20_000), Packets: uint64(1 + r.ExpFloat64()*r.ExpFloat64()*15),
			SamplingRate: 1000,
			RemoteASN:    asn, RemoteASOrg: fmt.Sprintf("AS%d Networks", asn), RemoteCountry: string([]byte{'A' + byte(rem%150/26), 'A' + byte(rem%150%26)}),
			Provider:     providers[rem%4],
			ExporterName: fmt.Sprintf("edge-%d", 1+exp), InIfName: fmt.Sprintf("xe-0/0/%d", i%64),
		}
		if rem%1000 == 0 {
			f.Intel = "feodo"
		}
		switch r.IntN(50) {
		case 0: // both sides are subscribers
			f.Kind, f.Direction, f.Remote, f.RemotePort = flow.KindBoth, flow.DirOutbound, flow.Addr{}, 0
			f.RemoteASN, f.RemoteASOrg, f.RemoteCountry, f.Provider = 0, "", "", ""
			f.Peer, f.PeerPort = pseudonym(int(subs.Uint64())), uint16(1024+r.IntN(64_512))
		case 1: // transit
			f.Kind, f.Direction, f.Sub, f.SubPort = flow.KindTransit, flow.DirUnknown, flow.Pseudonym{}, 0
			f.TransitSrc, f.TransitSrcPort = flow.AddrFrom(netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(256)), byte(r.IntN(256))})), uint16(r.IntN(65_536))
		}
		b.Flows = append(b.Flows, f)
	}
	return out
}
