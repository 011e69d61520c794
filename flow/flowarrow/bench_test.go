package flowarrow

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spaolacci/murmur3"

	"github.com/ccflow/ccflow/bench/sim"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowtest"
)

// The benchmarks encode what the bus sends: a 64k-flow batch split by
// partition (murmur3 of the remote address, as bus.PartitionOf), one
// message per partition. They report bytes per flow on the wire and CPU
// time per flow (user+system time of the process, so a loaded machine
// does not inflate it the way it inflates wall time).
//
//	go test ./flow/flowarrow -run '^$' -bench 'Encode|Decode' -count 5 | benchstat /dev/stdin

const benchBatch = 65536

// population is a named source of flows.
type population struct {
	name  string
	flows func(tb testing.TB) []flow.Pseudo
}

var populations = []population{
	// flowtest's default: connections (two flows each) in subscriber
	// sessions.
	{"sessions", func(tb testing.TB) []flow.Pseudo { return flowtest.New(7, flowtest.Options{}).Flows(benchBatch) }},
	// flowtest with every flow drawn on its own: the worst case.
	{"uniform", func(tb testing.TB) []flow.Pseudo {
		return flowtest.New(7, flowtest.Options{Uniform: true}).Flows(benchBatch)
	}},
	// bench/sim's ISP model, 200,000 subscribers, pseudonymized.
	{"sim", func(tb testing.TB) []flow.Pseudo { return simFlows(tb, 200_000, benchBatch) }},
}

// partitions returns the selections of flows per partition.
func partitions(flows []flow.Pseudo, n int) [][]int32 {
	out := make([][]int32, n)
	for i := range flows {
		p := partitionOf(&flows[i], n)
		out[p] = append(out[p], int32(i))
	}
	return out
}

// partitionOf is bus.PartitionOf(bus.PartitionKey(f), n).
func partitionOf(f *flow.Pseudo, n int) int {
	k := f.Remote
	if f.Kind == flow.KindBoth && k.IsZero() {
		k = flow.Addr(f.Peer)
	}
	return int(murmur3.Sum32(k[:]) % uint32(n))
}

// cpuNow returns the CPU time (user + system) this process has used.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkEncode(b *testing.B) {
	type cfg struct {
		comp  Compression
		parts int
	}
	cases := []cfg{{CompressionFrameZstd, 8}, {CompressionFrameZstd, 4}, {CompressionFrameZstd, 1}, {compV1Frame, 8}}
	for _, pop := range populations {
		cs := cases
		if pop.name == "sessions" {
			cs = append(cs, cfg{CompressionNone, 8}, cfg{CompressionBufferZstd, 8}, cfg{CompressionBufferLZ4, 8})
		}
		for _, c := range cs {
			b.Run(fmt.Sprintf("%s/p%d/%s", pop.name, c.parts, compName(c.comp)), func(b *testing.B) {
				flows := pop.flows(b)
				sels := partitions(flows, c.parts)
				encode := encodeFunc(c.comp)
				var buf []byte
				size := 0
				b.ReportAllocs()
				b.ResetTimer()
				cpu := cpuNow()
				for i := 0; i < b.N; i++ {
					size = 0
					for _, sel := range sels {
						var err error
						if buf, err = encode(buf[:0], flows, sel); err != nil {
							b.Fatal(err)
						}
						size += len(buf)
					}
				}
				cpu = cpuNow() - cpu
				n := float64(b.N) * float64(len(flows))
				b.ReportMetric(float64(size)/float64(len(flows)), "B/flow")
				b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/flow")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkEncodeParts is BenchmarkEncode's zstd cases through
// EncodeParts (the producer's path: one pass over the batch) instead of
// one EncodeSelected per partition.
func BenchmarkEncodeParts(b *testing.B) {
	for _, pop := range populations {
		for _, parts := range []int{8, 4} {
			b.Run(fmt.Sprintf("%s/p%d/zstd", pop.name, parts), func(b *testing.B) {
				flows := pop.flows(b)
				enc := NewEncoder(CompressionFrameZstd)
				partOf := func(f *flow.Pseudo) int { return partitionOf(f, parts) }
				id := func() flow.BatchID { return flow.BatchID{1} }
				size := 0
				emit := func(_, _ int, payload []byte) error { size += len(payload); return nil }
				b.ReportAllocs()
				b.ResetTimer()
				cpu := cpuNow()
				for i := 0; i < b.N; i++ {
					size = 0
					if err := enc.EncodeParts(flows, parts, partOf, 32768, id, emit); err != nil {
						b.Fatal(err)
					}
				}
				cpu = cpuNow() - cpu
				b.ReportMetric(float64(size)/float64(len(flows)), "B/flow")
				b.ReportMetric(float64(cpu.Nanoseconds())/(float64(b.N)*float64(len(flows))), "cpu-ns/flow")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, pop := range populations {
		for _, c := range []Compression{CompressionFrameZstd, compV1Frame, CompressionBufferZstd} {
			if c == CompressionBufferZstd && pop.name != "sessions" {
				continue
			}
			b.Run(fmt.Sprintf("%s/p8/%s", pop.name, compName(c)), func(b *testing.B) {
				flows := pop.flows(b)
				encode := encodeFunc(c)
				var payloads [][]byte
				for _, sel := range partitions(flows, 8) {
					p, err := encode(nil, flows, sel)
					if err != nil {
						b.Fatal(err)
					}
					payloads = append(payloads, p)
				}
				d := NewDecoder(0)
				var out []flow.Pseudo
				b.ReportAllocs()
				b.ResetTimer()
				cpu := cpuNow()
				for i := 0; i < b.N; i++ {
					for _, p := range payloads {
						var err error
						if out, _, err = d.Decode(out[:0], p); err != nil {
							b.Fatal(err)
						}
					}
				}
				cpu = cpuNow() - cpu
				n := float64(b.N) * float64(len(flows))
				b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/flow")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// compV1Frame is the bus's encoding before wire version 2: the flow
// schema as is, built with Builder, written by Arrow's IPC writer, in one
// zstd frame. Kept in the benchmarks for comparison.
const compV1Frame Compression = 100

func compName(c Compression) string {
	if c == compV1Frame {
		return "v1-zstd"
	}
	return [...]string{"zstd", "arrow-zstd", "arrow-lz4", "none"}[c]
}

// encodeFunc returns a function encoding flows[sel] with c.
func encodeFunc(c Compression) func(dst []byte, flows []flow.Pseudo, sel []int32) ([]byte, error) {
	if c != compV1Frame {
		enc := NewEncoder(c)
		return func(dst []byte, flows []flow.Pseudo, sel []int32) ([]byte, error) {
			return enc.EncodeSelected(dst, flow.BatchID{1}, flows, sel)
		}
	}
	enc, b := NewEncoder(CompressionFrameZstd), NewBuilder()
	return func(dst []byte, flows []flow.Pseudo, sel []int32) ([]byte, error) {
		b.Reset()
		for _, i := range sel {
			b.Append(flow.BatchID{1}, &flows[i])
		}
		rec := b.Record()
		defer rec.Release()
		return enc.EncodeRecord(dst, rec)
	}
}

var (
	simOnce  sync.Once
	simCache []flow.Pseudo
)

// simFlows returns n flows of bench/sim's model (the ISP simulator of
// `ccflow simulate`) with subscribers subscribers, pseudonymized and
// enriched the way the collector would: the subscriber side (100.64.0.0/10
// or 2001:db8::/32) becomes a random 16-byte pseudonym per subscriber and
// address family, the remote side gets one of a few AS records by a hash of
// its address, the exporter follows the subscriber. The first 300 seconds
// of event time are skipped (warm-up).
func simFlows(tb testing.TB, subscribers, n int) []flow.Pseudo {
	if subscribers == 200_000 && n == benchBatch {
		simOnce.Do(func() { simCache = makeSimFlows(tb, subscribers, n) })
		return simCache
	}
	return makeSimFlows(tb, subscribers, n)
}

func makeSimFlows(tb testing.TB, subscribers, n int) []flow.Pseudo {
	cfg := sim.DefaultConfig()
	cfg.Subscribers = subscribers
	cfg.Start = time.Unix(1_760_000_000, 0)
	s, err := sim.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	seed := maphash.MakeSeed()
	p4 := netip.MustParsePrefix("100.64.0.0/10")
	p6 := netip.MustParsePrefix("2001:db8::/32")
	orgs := []struct {
		asn           uint32
		org, cc, prov string
	}{
		{15169, "GOOGLE", "US", "cloud"}, {16509, "AMAZON-02", "US", "cloud"}, {13335, "CLOUDFLARENET", "US", "cdn"},
		{24940, "Hetzner Online GmbH", "DE", "cloud"}, {16276, "OVH SAS", "FR", "cloud"}, {3320, "Deutsche Telekom AG", "DE", ""},
		{714, "APPLE-ENGINEERING", "US", "push"}, {8075, "MICROSOFT-CORP-MSN-AS-BLOCK", "US", "cloud"}, {0, "", "", ""},
		{49505, "JSC Selectel", "RU", ""}, {4134, "Chinanet", "CN", ""},
	}
	names := []string{"edge-fra1", "edge-fra2", "edge-ber1", "edge-ham1"}
	exps := []flow.Addr{
		flow.AddrFrom(netip.MustParseAddr("192.0.2.1")), flow.AddrFrom(netip.MustParseAddr("192.0.2.2")),
		flow.AddrFrom(netip.MustParseAddr("192.0.2.3")), flow.AddrFrom(netip.MustParseAddr("2001:db8::1")),
	}
	for range 300 {
		s.Next()
	}
	out := make([]flow.Pseudo, 0, n)
	for len(out) < n {
		recs, _ := s.Next()
		for i := range recs {
			if len(out) == n {
				break
			}
			r := &recs[i]
			f := flow.Pseudo{TimeStartMs: r.StartMs, TimeEndMs: r.EndMs, Protocol: flow.ProtocolIPFIX, Kind: flow.KindSubscriber,
				Epoch: 2900, Proto: r.Proto, TCPFlags: r.TCPFlags, Bytes: r.Bytes, Packets: r.Packets, SamplingRate: 1,
				InIf: r.InIf, OutIf: r.OutIf}
			var remote netip.Addr
			if p4.Contains(r.Src) || p6.Contains(r.Src) {
				f.Direction = flow.DirOutbound
				f.SubPort, f.RemotePort, remote = r.SrcPort, r.DstPort, r.Dst
			} else {
				f.Direction = flow.DirInbound
				f.SubPort, f.RemotePort, remote = r.DstPort, r.SrcPort, r.Src
			}
			fam := uint64(0)
			if remote.Is6() {
				fam = 1
			}
			h := maphash.Comparable(seed, [2]uint64{uint64(r.Subscriber), fam})
			binary.LittleEndian.PutUint64(f.Sub[:], h)
			binary.LittleEndian.PutUint64(f.Sub[8:], maphash.Comparable(seed, h))
			f.Remote = flow.AddrFrom(remote)
			o := orgs[maphash.Comparable(seed, f.Remote)%uint64(len(orgs))]
			f.RemoteASN, f.RemoteASOrg, f.RemoteCountry, f.Provider = o.asn, o.org, o.cc, o.prov
			ex := int(r.Subscriber) % len(exps)
			f.Exporter, f.ObsDomain, f.ExporterName = exps[ex], uint32(ex), names[ex]
			out = append(out, f)
		}
	}
	return out
}
