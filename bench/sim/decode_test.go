package sim_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"github.com/netsampler/goflow2/v2/decoders/sflow"
	protoproducer "github.com/netsampler/goflow2/v2/producer/proto"

	"github.com/ccflow/ccflow/bench/sim"
)

// flowKey is a flow record as compared between encoder and decoder.
type flowKey struct {
	Start, End       int64
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto, Flags     uint8
	Bytes, Packets   uint64
	InIf, OutIf      uint32
	Sampling         uint64
}

// sampleKey is one sFlow flow sample as compared between encoder and decoder.
type sampleKey struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto, Flags     uint8
	FrameLen         uint32
	InIf, OutIf      uint32
	Rate             uint32
}

// testSteps returns the records of five simulated minutes plus a step of
// hand-made edge cases.
func testSteps(t testing.TB) []step {
	steps := simulate(t, testConfig(), 300)
	last := steps[len(steps)-1].exportMs + 1000
	return append(steps, step{edgeRecords(last), last})
}

// encodeAll encodes every step with enc and returns copies of the
// datagrams, checking the size limit.
func encodeAll(t testing.TB, enc sim.Encoder, steps []step, limit int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 0, 65536)
	for _, s := range steps {
		recs := s.recs
		for len(recs) > 0 || enc.Pending() {
			d, n, _ := enc.Encode(buf, recs, s.exportMs)
			recs = recs[n:]
			if len(d) > limit {
				t.Fatalf("datagram of %d bytes exceeds the limit %d", len(d), limit)
			}
			if len(d) > 0 {
				out = append(out, append([]byte(nil), d...))
			}
		}
	}
	return out
}

// addrCmp lets go-cmp compare netip.Addr values.
var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func addr(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}

// TestNetFlowIPFIXDecodedByGoflow2 encodes five minutes of simulated traffic
// and edge cases as NetFlow v9 and IPFIX, unsampled and 1:10 sampled, and
// decodes every datagram with goflow2's decoder and producer: the records,
// their times, counters and sampling rate must be the ones sent.
func TestNetFlowIPFIXDecodedByGoflow2(t *testing.T) {
	steps := testSteps(t)
	for _, f := range []sim.Format{sim.FormatNetFlow9, sim.FormatIPFIX} {
		for _, sampling := range []uint32{1, 10} {
			t.Run(fmt.Sprintf("%s/1:%d", f, sampling), func(t *testing.T) {
				var want []flowKey
				cfg := sim.EncoderConfig{
					ObservationDomain: 7, Sampling: sampling, Seed: 42,
					BootMs: testStart.UnixMilli() - 86_400_000,
					Trace: func(r *sim.Record) {
						want = append(want, flowKey{r.StartMs, r.EndMs, r.Src, r.Dst, r.SrcPort, r.DstPort, r.Proto, r.TCPFlags, r.Bytes, r.Packets, r.InIf, r.OutIf, uint64(max(sampling, 1))})
					},
				}
				enc, err := sim.NewEncoder(f, cfg)
				if err != nil {
					t.Fatal(err)
				}
				dgrams := encodeAll(t, enc, steps, 1400)
				templates := netflow.CreateTemplateSystem()
				rates := protoproducer.CreateSamplingSystem()
				var got []flowKey
				var withTemplates int
				var lastSeq uint32
				var dataRecs uint32
				for i, d := range dgrams {
					var nf9 netflow.NFv9Packet
					var ipfix netflow.IPFIXPacket
					if err := netflow.DecodeMessageVersion(bytes.NewBuffer(d), templates, &nf9, &ipfix); err != nil {
						t.Fatalf("datagram %d: goflow2 decode: %v", i, err)
					}
					var msgs []any
					var flowSets []any
					if f == sim.FormatNetFlow9 {
						if nf9.SourceId != 7 {
							t.Fatalf("source id %d, want 7", nf9.SourceId)
						}
						if i > 0 && nf9.SequenceNumber != lastSeq+1 {
							t.Fatalf("datagram %d: sequence %d after %d", i, nf9.SequenceNumber, lastSeq)
						}
						lastSeq = nf9.SequenceNumber
						flowSets = nf9.FlowSets
						ms, err := protoproducer.ProcessMessageNetFlowV9Config(&nf9, rates, nil)
						if err != nil {
							t.Fatal(err)
						}
						for _, m := range ms {
							msgs = append(msgs, m)
						}
					} else {
						if ipfix.ObservationDomainId != 7 {
							t.Fatalf("observation domain %d, want 7", ipfix.ObservationDomainId)
						}
						if ipfix.SequenceNumber != dataRecs {
							t.Fatalf("datagram %d: sequence %d, want %d data records sent before", i, ipfix.SequenceNumber, dataRecs)
						}
						if int(ipfix.Length) != len(d) {
							t.Fatalf("datagram %d: length field %d, datagram %d", i, ipfix.Length, len(d))
						}
						flowSets = ipfix.FlowSets
						ms, err := protoproducer.ProcessMessageIPFIXConfig(&ipfix, rates, nil)
						if err != nil {
							t.Fatal(err)
						}
						for _, m := range ms {
							msgs = append(msgs, m)
						}
					}
					hasTemplate := false
					for _, fs := range flowSets {
						switch fs := fs.(type) {
						case netflow.TemplateFlowSet:
							hasTemplate = true
							if len(fs.Records) != 2 {
								t.Fatalf("template flowset with %d templates, want 2", len(fs.Records))
							}
						case netflow.RawFlowSet:
							t.Fatalf("datagram %d: flowset %d without template", i, fs.Id)
						case netflow.DataFlowSet:
							dataRecs += uint32(len(fs.Records))
						case netflow.OptionsDataFlowSet:
							dataRecs += uint32(len(fs.Records))
							for _, r := range fs.Records {
								vals := map[uint16]uint64{}
								for _, v := range r.OptionsValues {
									var n uint64
									for _, c := range v.Value.([]byte) {
										n = n<<8 | uint64(c)
									}
									vals[v.Type] = n
								}
								if vals[34] != uint64(sampling) || vals[35] != 2 {
									t.Fatalf("sampling options %v, want interval %d and algorithm 2", vals, sampling)
								}
							}
						}
					}
					if i == 0 && !hasTemplate {
						t.Fatal("first datagram carries no templates")
					}
					if hasTemplate {
						withTemplates++
					}
					for _, m := range msgs {
						fm := m.(*protoproducer.ProtoProducerMessage)
						got = append(got, flowKey{
							Start: int64(fm.TimeFlowStartNs / 1e6), End: int64(fm.TimeFlowEndNs / 1e6),
							Src: addr(fm.SrcAddr), Dst: addr(fm.DstAddr),
							SrcPort: uint16(fm.SrcPort), DstPort: uint16(fm.DstPort),
							Proto: uint8(fm.Proto), Flags: uint8(fm.TcpFlags),
							Bytes: fm.Bytes, Packets: fm.Packets, InIf: fm.InIf, OutIf: fm.OutIf,
							Sampling: max(fm.SamplingRate, 1),
						})
					}
				}
				if len(want) < 1000 {
					t.Fatalf("only %d records exported", len(want))
				}
				if diff := cmp.Diff(got, want, addrCmp); diff != "" {
					t.Fatalf("goflow2 decoded records differ (-got +want):\n%s", diff)
				}
				if refresh := len(dgrams)/64 + 1; withTemplates < refresh {
					t.Errorf("%d of %d datagrams carry templates, want at least %d (refresh every 64)", withTemplates, len(dgrams), refresh)
				}
				var v6 int
				for _, w := range want {
					if w.Src.Is6() {
						v6++
					}
				}
				if v6 == 0 {
					t.Error("no IPv6 record was tested")
				}
				t.Logf("%d datagrams, %d records (%d IPv6), %.1f records/datagram", len(dgrams), len(want), v6, float64(len(want))/float64(len(dgrams)))
			})
		}
	}
}

// TestSFlowDecodedByGoflow2 encodes simulated traffic as sFlow v5 with
// Ethernet and bare-IP sampled headers, and decodes every datagram with
// goflow2: one flow sample per sampled packet, with the packet's addresses,
// ports, flags and length, the interfaces, the sampling rate and a sample
// pool that counts every packet offered.
func TestSFlowDecodedByGoflow2(t *testing.T) {
	steps := testSteps(t)
	// Unsampled, every packet is a sample: keep the small flows only.
	small := make([]step, len(steps))
	for i, s := range steps {
		small[i].exportMs = s.exportMs
		for _, r := range s.recs {
			if r.Packets <= 16 {
				small[i].recs = append(small[i].recs, r)
			}
		}
	}
	for _, hdr := range []sim.SFlowHeader{sim.SFlowHeaderEthernet, sim.SFlowHeaderIP} {
		for _, sampling := range []uint32{1, 64} {
			t.Run(fmt.Sprintf("header%d/1:%d", hdr, sampling), func(t *testing.T) {
				in := steps
				if sampling == 1 {
					in = small
				}
				var offered uint64
				for _, s := range in {
					for _, r := range s.recs {
						offered += r.Packets
					}
				}
				var want []sampleKey
				agent := netip.MustParseAddr("127.0.0.2")
				cfg := sim.EncoderConfig{
					ObservationDomain: 3, Sampling: sampling, Seed: 9, SFlowHeader: hdr, AgentAddr: agent,
					BootMs: testStart.UnixMilli() - 3_600_000,
					Trace: func(r *sim.Record) {
						want = append(want, expectedSamples(r, hdr, sampling)...)
					},
				}
				enc, err := sim.NewSFlowEncoder(cfg)
				if err != nil {
					t.Fatal(err)
				}
				dgrams := encodeAll(t, enc, in, 1400)
				var got []sampleKey
				var lastPool, lastSSeq uint32
				for i, d := range dgrams {
					var p sflow.Packet
					if err := sflow.DecodeMessageVersion(bytes.NewBuffer(d), &p); err != nil {
						t.Fatalf("datagram %d: goflow2 decode: %v", i, err)
					}
					if addr(p.AgentIP) != agent || p.SubAgentId != 3 || p.SequenceNumber != uint32(i) {
						t.Fatalf("datagram %d: agent %v sub-agent %d sequence %d", i, addr(p.AgentIP), p.SubAgentId, p.SequenceNumber)
					}
					if int(p.SamplesCount) != len(p.Samples) {
						t.Fatalf("datagram %d: %d samples announced, %d decoded", i, p.SamplesCount, len(p.Samples))
					}
					msgs, err := protoproducer.ProcessMessageSFlowConfig(&p, nil)
					if err != nil {
						t.Fatal(err)
					}
					for k, s := range p.Samples {
						fs, ok := s.(sflow.FlowSample)
						if !ok || len(fs.Records) != 1 {
							t.Fatalf("datagram %d sample %d: %T with %d records", i, k, s, len(fs.Records))
						}
						if fs.Header.SampleSequenceNumber != lastSSeq+1 || fs.SamplePool < lastPool || fs.Header.SourceIdValue != 100 {
							t.Fatalf("sample sequence %d after %d, pool %d after %d, source %d", fs.Header.SampleSequenceNumber, lastSSeq, fs.SamplePool, lastPool, fs.Header.SourceIdValue)
						}
						lastSSeq, lastPool = fs.Header.SampleSequenceNumber, fs.SamplePool
						sh := fs.Records[0].Data.(sflow.SampledHeader)
						fm := msgs[k].(*protoproducer.ProtoProducerMessage)
						if hdr == sim.SFlowHeaderIP {
							// goflow2's producer parses Ethernet only: give
							// its packet parser the IP header behind an
							// Ethernet header.
							et := []byte{0x08, 0x00}
							if sh.Protocol == 12 {
								et = []byte{0x86, 0xdd}
							} else if sh.Protocol != 11 {
								t.Fatalf("header protocol %d, want 11 or 12", sh.Protocol)
							}
							eth := append(make([]byte, 12), et...)
							if err := protoproducer.DefaultEnvironment.ParsePacket(fm, append(eth, sh.HeaderData...)); err != nil {
								t.Fatal(err)
							}
						} else if sh.Protocol != 1 || sh.Stripped != 4 {
							t.Fatalf("header protocol %d stripped %d, want 1 and 4", sh.Protocol, sh.Stripped)
						}
						got = append(got, sampleKey{
							Src: addr(fm.SrcAddr), Dst: addr(fm.DstAddr), SrcPort: uint16(fm.SrcPort), DstPort: uint16(fm.DstPort),
							Proto: uint8(fm.Proto), Flags: uint8(fm.TcpFlags), FrameLen: sh.FrameLength,
							InIf: fs.Input, OutIf: fs.Output, Rate: fs.SamplingRate,
						})
					}
				}
				if diff := cmp.Diff(got, want, addrCmp); diff != "" {
					t.Fatalf("goflow2 decoded samples differ (-got +want):\n%s", diff)
				}
				if uint64(lastPool) != offered%(1<<32) {
					t.Errorf("final sample pool %d, want %d packets offered", lastPool, offered)
				}
				if sampling > 1 {
					exp := float64(offered) / float64(sampling)
					if n := float64(len(want)); n < 0.9*exp || n > 1.1*exp {
						t.Errorf("%d samples of %d packets at 1:%d, want about %.0f", len(want), offered, sampling, exp)
					}
				} else if uint64(len(want)) != offered {
					t.Errorf("%d samples, want every one of %d packets", len(want), offered)
				}
				t.Logf("%d datagrams, %d samples, %.1f samples/datagram", len(dgrams), len(want), float64(len(want))/float64(len(dgrams)))
			})
		}
	}
}

// expectedSamples returns the samples an exported (sampled) record must
// produce: its bytes split evenly over its packets.
func expectedSamples(r *sim.Record, hdr sim.SFlowHeader, sampling uint32) []sampleKey {
	l3l4 := uint64(20)
	if r.Is6() {
		l3l4 = 40
	}
	if r.Proto == sim.ProtoTCP {
		l3l4 += 20
	} else {
		l3l4 += 8
	}
	var out []sampleKey
	for j := uint64(0); j < r.Packets; j++ {
		ipLen := r.Bytes / r.Packets
		if j < r.Bytes%r.Packets {
			ipLen++
		}
		ipLen = max(ipLen, l3l4)
		frame := uint32(ipLen)
		if hdr == sim.SFlowHeaderEthernet {
			frame += 18
		}
		out = append(out, sampleKey{r.Src, r.Dst, r.SrcPort, r.DstPort, r.Proto, r.TCPFlags, frame, r.InIf, r.OutIf, max(sampling, 1)})
	}
	return out
}

// TestEncodersSampledCounts checks 1:N NetFlow sampling statistically: the
// exported packets are about 1/N of the packets offered.
func TestEncodersSampledCounts(t *testing.T) {
	steps := testSteps(t)
	var offered uint64
	for _, s := range steps {
		for _, r := range s.recs {
			offered += r.Packets
		}
	}
	const n = 100
	var got uint64
	enc, err := sim.NewNetFlow9Encoder(sim.EncoderConfig{Sampling: n, Seed: 5, Trace: func(r *sim.Record) { got += r.Packets }})
	if err != nil {
		t.Fatal(err)
	}
	encodeAll(t, enc, steps, 1400)
	exp := float64(offered) / n
	if g := float64(got); g < 0.95*exp || g > 1.05*exp {
		t.Errorf("%d packets exported of %d at 1:%d, want about %.0f", got, offered, n, exp)
	}
	if enc.Sampler().Pool() != offered {
		t.Errorf("sampler saw %d packets, want %d", enc.Sampler().Pool(), offered)
	}
}

// TestEncodeAllocations asserts that encoding allocates nothing once the
// buffer exists.
func TestEncodeAllocations(t *testing.T) {
	steps := testSteps(t)
	var recs []sim.Record
	for _, s := range steps[200:] {
		recs = append(recs, s.recs...)
	}
	for _, f := range []sim.Format{sim.FormatNetFlow9, sim.FormatIPFIX, sim.FormatSFlow5} {
		for _, sampling := range []uint32{1, 100} {
			enc, err := sim.NewEncoder(f, sim.EncoderConfig{Sampling: sampling})
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 0, 1400)
			var ms int64 = testStart.UnixMilli()
			allocs := testing.AllocsPerRun(20, func() {
				rest := recs
				for len(rest) > 0 || enc.Pending() {
					_, n, _ := enc.Encode(buf, rest, ms)
					rest = rest[n:]
				}
				ms += 1000
			})
			if allocs != 0 {
				t.Errorf("%s 1:%d: %.1f allocations per run, want 0", f, sampling, allocs)
			}
		}
	}
}

// TestEncodeOddAddresses: records with invalid, mixed-family or
// IPv4-mapped addresses encode (as zeros or IPv4) instead of panicking.
func TestEncodeOddAddresses(t *testing.T) {
	v4 := netip.MustParseAddr("100.64.0.1")
	mapped := netip.MustParseAddr("::ffff:203.0.113.1")
	v6 := netip.MustParseAddr("2001:db8::1")
	recs := []sim.Record{
		{Src: netip.Addr{}, Dst: v4, Packets: 1, Bytes: 40, Proto: sim.ProtoTCP},
		{Src: mapped, Dst: v6, Packets: 1, Bytes: 40, Proto: sim.ProtoUDP},
		{Src: v6, Dst: netip.Addr{}, Packets: 2, Bytes: 100, Proto: sim.ProtoTCP},
	}
	for _, f := range []sim.Format{sim.FormatNetFlow9, sim.FormatIPFIX, sim.FormatSFlow5} {
		enc, err := sim.NewEncoder(f, sim.EncoderConfig{})
		if err != nil {
			t.Fatal(err)
		}
		d, n, flows := enc.Encode(nil, recs, testStart.UnixMilli())
		if n != len(recs) || flows < len(recs) || len(d) == 0 {
			t.Errorf("%s: consumed %d, %d flows, %d bytes", f, n, flows, len(d))
		}
	}
}

func TestEncoderConfigErrors(t *testing.T) {
	for _, c := range []sim.EncoderConfig{{MaxDatagram: 100}, {MaxDatagram: 70000}, {SFlowHeader: 5}} {
		if _, err := sim.NewSFlowEncoder(c); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
