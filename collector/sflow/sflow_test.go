package sflow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	gf "github.com/netsampler/goflow2/v2/decoders/sflow"

	"github.com/ccflow/ccflow/collector/pcap"
)

// corpus returns the real pmacctd (sfprobe) datagrams of both sFlow corpus
// files: sampled headers with header_protocol 1 (Ethernet) and 11 (IPv4).
func corpus(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, file := range []string{"sflow5-ethernet.pcap", "sflow5-ipv4.pcap"} {
		f, err := os.Open(filepath.Join("..", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		ds, err := pcap.ReadDatagrams(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			out = append(out, d.Payload)
		}
	}
	if len(out) == 0 {
		t.Fatal("empty corpus")
	}
	return out
}

// goflowSafe reports whether goflow2 can be given b: it allocates an
// expanded flow sample's record slice before checking the count, so a
// mutated count asks for gigabytes. (ccflow's decoder is bounded by the
// datagram's length.)
func goflowSafe(b []byte) bool {
	if len(b) < 8 {
		return true
	}
	n := 4
	if binary.BigEndian.Uint32(b[4:]) == 2 {
		n = 16
	}
	if len(b) < 8+n+16 {
		return true
	}
	count := binary.BigEndian.Uint32(b[8+n+12:])
	b = b[8+n+16:]
	for i := uint32(0); i < count && len(b) >= 8; i++ {
		format, l := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
		b = b[8:]
		if uint64(l) > uint64(len(b)) {
			return true
		}
		if format == formatExpandedFlow && l >= expandedSampleFixedLen && binary.BigEndian.Uint32(b[40:]) > 1000 {
			return false
		}
		b = b[l:]
	}
	return true
}

// reference decodes b with goflow2 v2.2.6 and converts its flow samples
// into this package's types.
func reference(b []byte) (Datagram, []FlowSample, error) {
	var p gf.Packet
	if err := gf.DecodeMessageVersion(bytes.NewBuffer(b), &p); err != nil {
		return Datagram{}, nil, err
	}
	d := Datagram{Version: p.Version, AgentIPVersion: p.IPVersion, SubAgentID: p.SubAgentId,
		SequenceNumber: p.SequenceNumber, Uptime: p.Uptime, SamplesCount: p.SamplesCount}
	copy(d.AgentIP[:], p.AgentIP)
	var out []FlowSample
	for _, s := range p.Samples {
		var fs FlowSample
		var recs []gf.FlowRecord
		switch s := s.(type) {
		case gf.FlowSample:
			d.FlowSamples++
			fs = FlowSample{
				SequenceNumber: s.Header.SampleSequenceNumber, SourceIDType: s.Header.SourceIdType,
				SourceIDIndex: s.Header.SourceIdValue, SamplingRate: s.SamplingRate, SamplePool: s.SamplePool,
				Drops: s.Drops, InputFormat: s.Input >> 30, Input: s.Input & 0x3fffffff,
				OutputFormat: s.Output >> 30, Output: s.Output & 0x3fffffff, RecordsCount: s.FlowRecordsCount,
			}
			recs = s.Records
		case gf.ExpandedFlowSample:
			d.FlowSamples++
			fs = FlowSample{
				Expanded: true, SequenceNumber: s.Header.SampleSequenceNumber, SourceIDType: s.Header.SourceIdType,
				SourceIDIndex: s.Header.SourceIdValue, SamplingRate: s.SamplingRate, SamplePool: s.SamplePool,
				Drops: s.Drops, InputFormat: s.InputIfFormat, Input: s.InputIfValue,
				OutputFormat: s.OutputIfFormat, Output: s.OutputIfValue, RecordsCount: s.FlowRecordsCount,
			}
			recs = s.Records
		case gf.CounterSample:
			d.CounterSamples++
			continue
		default:
			if s != nil {
				d.OtherSamples++
			}
			continue
		}
		for _, r := range recs {
			switch x := r.Data.(type) {
			case gf.SampledHeader:
				h := x.HeaderData
				if int64(x.OriginalLength) <= int64(len(h)) {
					h = h[:x.OriginalLength]
				}
				fs.Header = SampledHeader{Protocol: x.Protocol, FrameLength: x.FrameLength, Stripped: x.Stripped, Length: x.OriginalLength, Data: h}
				fs.Has |= HasHeader
			case gf.SampledIPv4:
				fs.IP = SampledIP{Length: x.Length, Protocol: x.Protocol, SrcPort: x.SrcPort, DstPort: x.DstPort, TCPFlags: x.TcpFlags, TOS: x.Tos}
				copy(fs.IP.Src[:], x.SrcIP)
				copy(fs.IP.Dst[:], x.DstIP)
				fs.Has = fs.Has&^HasIPv6 | HasIPv4
			case gf.SampledIPv6:
				fs.IP = SampledIP{Length: x.Length, Protocol: x.Protocol, SrcPort: x.SrcPort, DstPort: x.DstPort, TCPFlags: x.TcpFlags, TOS: x.Priority}
				copy(fs.IP.Src[:], x.SrcIP)
				copy(fs.IP.Dst[:], x.DstIP)
				fs.Has = fs.Has&^HasIPv4 | HasIPv6
			case gf.ExtendedSwitch:
				fs.Switch = ExtendedSwitch{SrcVLAN: x.SrcVlan, SrcPriority: x.SrcPriority, DstVLAN: x.DstVlan, DstPriority: x.DstPriority}
				fs.Has |= HasSwitch
			}
		}
		out = append(out, fs)
	}
	return d, out, nil
}

// differential checks that Decode equals goflow2 whenever goflow2 accepts
// b. (goflow2 rejects a datagram for one bad record or sample, or an
// enterprise sample format; ccflow skips those and keeps the rest.)
func differential(t *testing.T, b []byte) int {
	t.Helper()
	var d Datagram
	got, err := Decode(b, &d, nil)
	if !goflowSafe(b) {
		return 0
	}
	wd, want, werr := reference(b)
	if werr != nil {
		return 0
	}
	// Plain equality first: cmp.Diff is only for the failure message.
	if d != wd {
		t.Fatalf("datagram (ccflow error %v) (-ccflow +goflow2):\n%s", err, cmp.Diff(d, wd))
	}
	if !slices.EqualFunc(got, want, sampleEqual) {
		t.Fatalf("flow samples (ccflow error %v) (-ccflow +goflow2):\n%s", err,
			cmp.Diff(got, want, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })))
	}
	return len(got)
}

// sampleEqual compares flow samples, header bytes by value.
func sampleEqual(a, b FlowSample) bool {
	ha, hb := a.Header, b.Header
	if ha.Protocol != hb.Protocol || ha.FrameLength != hb.FrameLength || ha.Stripped != hb.Stripped ||
		ha.Length != hb.Length || !bytes.Equal(ha.Data, hb.Data) {
		return false
	}
	a.Header, b.Header = SampledHeader{}, SampledHeader{}
	return reflect.DeepEqual(a, b)
}

// TestDifferentialCorpus proves the decoder equal to goflow2 on every real
// datagram of the sFlow corpus.
func TestDifferentialCorpus(t *testing.T) {
	n := 0
	for _, b := range corpus(t) {
		n += differential(t, b)
	}
	if n == 0 {
		t.Fatal("no samples compared")
	}
	t.Logf("%d flow samples equal", n)
}

// FuzzSFlow fuzzes the decoder and the header parser from real pmacctd
// datagrams (and the synthetic ones below) and compares the decoder with
// goflow2.
func FuzzSFlow(f *testing.F) {
	for _, b := range corpus(f) {
		f.Add(b)
	}
	for _, b := range syntheticDatagrams() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		differential(t, b)
		var d Datagram
		samples, _ := Decode(b, &d, nil)
		for i := range samples {
			var p Packet
			ParseHeader(samples[i].Header.Protocol, samples[i].Header.Data, &p)
			if p.Has&PacketIP != 0 && p.IPVersion != 4 && p.IPVersion != 6 {
				t.Fatalf("IP version %d", p.IPVersion)
			}
		}
	})
}

// builder helpers for synthetic sFlow datagrams (documentation addresses).
func be32(b []byte, v ...uint32) []byte {
	for _, x := range v {
		b = binary.BigEndian.AppendUint32(b, x)
	}
	return b
}

func record(format uint32, body []byte) []byte {
	return append(be32(nil, format, uint32(len(body))), body...)
}

func headerRecord(protocol uint32, frame []byte) []byte {
	b := be32(nil, protocol, uint32(len(frame))+4, 4, uint32(len(frame)))
	b = append(b, frame...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return record(recordRawHeader, b)
}

func datagram(samples ...[]byte) []byte {
	b := be32(nil, 5, 1, 0xc0000201, 0, 1, 1000, uint32(len(samples)))
	for _, s := range samples {
		b = append(b, s...)
	}
	return b
}

func flowSample(rate uint32, records ...[]byte) []byte {
	body := be32(nil, 1, 3, rate, 100, 0, 7, 8, uint32(len(records)))
	for _, r := range records {
		body = append(body, r...)
	}
	return append(be32(nil, formatFlow, uint32(len(body))), body...)
}

func expandedSample(rate uint32, records ...[]byte) []byte {
	body := be32(nil, 1, 0, 3, rate, 100, 0, 0, 17, 0, 18, uint32(len(records)))
	for _, r := range records {
		body = append(body, r...)
	}
	return append(be32(nil, formatExpandedFlow, uint32(len(body))), body...)
}

func counterSample() []byte {
	body := be32(nil, 1, 3, 1, 2000, 4, 0)
	return append(be32(nil, formatCounter, uint32(len(body))), body...)
}

// frame builds an Ethernet frame with optional VLAN tags around an IP
// packet.
func frame(tags []uint16, ip []byte) []byte {
	b := []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2}
	for i, v := range tags {
		tpid := uint16(0x8100)
		if i == 0 && len(tags) > 1 {
			tpid = 0x88a8
		}
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, v)
	}
	et := uint16(0x0800)
	if ip[0]>>4 == 6 {
		et = 0x86dd
	}
	b = binary.BigEndian.AppendUint16(b, et)
	return append(b, ip...)
}

func ipv4(src, dst string, proto uint8, l4 []byte) []byte {
	b := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0}
	b = append(b, netip.MustParseAddr(src).AsSlice()...)
	b = append(b, netip.MustParseAddr(dst).AsSlice()...)
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(l4)))
	return append(b, l4...)
}

func ipv6(src, dst string, next uint8, ext, l4 []byte) []byte {
	b := []byte{0x60, 0, 0, 0, 0, 0, next, 64}
	b = append(b, netip.MustParseAddr(src).AsSlice()...)
	b = append(b, netip.MustParseAddr(dst).AsSlice()...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(ext)+len(l4)))
	return append(append(b, ext...), l4...)
}

func tcp(sport, dport uint16, flags uint8) []byte {
	b := binary.BigEndian.AppendUint16(nil, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = append(b, make([]byte, 16)...)
	b[12], b[13] = 0x50, flags
	return b
}

func udp(sport, dport uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	return append(b, 0, 8, 0, 0)
}

func syntheticDatagrams() [][]byte {
	qinq := frame([]uint16{100, 200}, ipv4("192.0.2.1", "198.51.100.1", 6, tcp(40000, 443, 0x12)))
	v6 := ipv6("2001:db8::1", "2001:db8::2", 0, []byte{17, 0, 1, 4, 0, 0, 0, 0}, udp(5353, 53))
	ip4rec := be32(nil, 1500, 17)
	ip4rec = append(ip4rec, netip.MustParseAddr("203.0.113.1").AsSlice()...)
	ip4rec = append(ip4rec, netip.MustParseAddr("203.0.113.2").AsSlice()...)
	ip4rec = be32(ip4rec, 123, 123, 0, 0)
	return [][]byte{
		datagram(flowSample(512, headerRecord(HeaderEthernet, qinq), record(recordExtendedSwitch, be32(nil, 100, 0, 300, 0))), counterSample()),
		datagram(expandedSample(1024, headerRecord(HeaderIPv6, v6))),
		datagram(flowSample(64, record(recordIPv4, ip4rec))),
	}
}

func TestDecodeSynthetic(t *testing.T) {
	type got struct {
		Rate             uint32
		Src, Dst         netip.Addr
		Proto            uint8
		SrcPort, DstPort uint16
		TCPFlags         uint8
		VLAN             uint16
	}
	var g []got
	counters := 0
	for _, b := range syntheticDatagrams() {
		var d Datagram
		samples, err := Decode(b, &d, nil)
		if err != nil {
			t.Fatal(err)
		}
		counters += d.CounterSamples
		for _, s := range samples {
			if s.Has&HasHeader == 0 {
				g = append(g, got{Rate: s.SamplingRate, Src: netip.AddrFrom4([4]byte(s.IP.Src[:4])), Dst: netip.AddrFrom4([4]byte(s.IP.Dst[:4])),
					Proto: uint8(s.IP.Protocol), SrcPort: uint16(s.IP.SrcPort), DstPort: uint16(s.IP.DstPort)})
				continue
			}
			var p Packet
			if !ParseHeader(s.Header.Protocol, s.Header.Data, &p) {
				t.Fatalf("no IP in header protocol %d", s.Header.Protocol)
			}
			src, dst := netip.AddrFrom16(p.Src), netip.AddrFrom16(p.Dst)
			if p.IPVersion == 4 {
				src, dst = netip.AddrFrom4([4]byte(p.Src[:4])), netip.AddrFrom4([4]byte(p.Dst[:4]))
			}
			g = append(g, got{s.SamplingRate, src, dst, p.Proto, p.SrcPort, p.DstPort, p.TCPFlags, p.VLAN})
		}
	}
	want := []got{
		{512, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1"), 6, 40000, 443, 0x12, 100},
		{1024, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 17, 5353, 53, 0, 0},
		{64, netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), 17, 123, 123, 0, 0},
	}
	if diff := cmp.Diff(g, want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("samples (-got +want):\n%s", diff)
	}
	if counters != 1 {
		t.Errorf("counter samples = %d, want 1", counters)
	}
	for i, b := range syntheticDatagrams() {
		if n := differential(t, b); n == 0 {
			t.Errorf("synthetic datagram %d: goflow2 comparison did not run", i)
		}
	}
}

func TestParseHeader(t *testing.T) {
	fragment := ipv4("192.0.2.1", "198.51.100.1", 17, udp(1, 2))
	binary.BigEndian.PutUint16(fragment[6:], 100)
	v6frag := ipv6("2001:db8::1", "2001:db8::2", 44, []byte{6, 0, 0, 8, 0, 0, 0, 1}, tcp(1, 2, 2))
	tests := []struct {
		name     string
		protocol uint32
		b        []byte
		ip       bool
		want     Packet
	}{
		{"ipv4 icmp echo", HeaderIPv4, ipv4("192.0.2.1", "198.51.100.1", 1, []byte{8, 0, 0, 0}), true,
			Packet{Has: PacketIP | PacketPorts, IPVersion: 4, Proto: 1, DstPort: 0x0800, Length: 24}},
		{"ipv4 non-first fragment", HeaderIPv4, fragment, true, Packet{Has: PacketIP | PacketFragment, IPVersion: 4, Proto: 17, Length: 28}},
		{"ipv6 non-first fragment", HeaderIPv6, v6frag, true, Packet{Has: PacketIP | PacketFragment, IPVersion: 6, Proto: 6, Length: 68}},
		{"ethernet cut in the tag", HeaderEthernet, frame([]uint16{7}, ipv4("192.0.2.1", "198.51.100.1", 6, nil))[:15], false,
			Packet{Has: PacketEthernet, EtherType: 0x8100}},
		{"arp", HeaderEthernet, append(frame(nil, ipv4("192.0.2.1", "198.51.100.1", 6, nil))[:12], 0x08, 0x06), false,
			Packet{Has: PacketEthernet, EtherType: 0x0806}},
		{"tcp cut before flags", HeaderIPv4, ipv4("192.0.2.1", "198.51.100.1", 6, tcp(80, 81, 0x10)[:8]), true,
			Packet{Has: PacketIP | PacketPorts, IPVersion: 4, Proto: 6, SrcPort: 80, DstPort: 81, Length: 28}},
		{"unknown header protocol", 7, []byte{1, 2, 3}, false, Packet{}},
		{"not ip", HeaderIPv4, []byte{0x60, 1, 2}, false, Packet{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Packet
			ip := ParseHeader(tt.protocol, tt.b, &p)
			p.Src, p.Dst, p.SrcMAC, p.DstMAC = [16]byte{}, [16]byte{}, [6]byte{}, [6]byte{}
			if ip != tt.ip {
				t.Errorf("ip = %v, want %v", ip, tt.ip)
			}
			if diff := cmp.Diff(p, tt.want); diff != "" {
				t.Errorf("packet (-got +want):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good := syntheticDatagrams()[0]
	many := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(many[24:], 50)
	tests := []struct {
		name    string
		b       []byte
		want    error
		samples int
	}{
		{"empty", nil, ErrShort, 0},
		{"wrong version", be32(nil, 4, 1), ErrVersion, 0},
		{"bad agent type", be32(nil, 5, 3), ErrAgent, 0},
		{"short header", good[:20], ErrShort, 0},
		{"sample count beyond datagram", many, ErrSampleCount, 1},
		{"sample cut", good[:60], ErrShort, 0},
		{"short flow sample", datagram(append(be32(nil, formatFlow, 8), 0, 0, 0, 0, 0, 0, 0, 0)), ErrSample, 0},
		{"short ipv4 record", datagram(flowSample(1, record(recordIPv4, be32(nil, 1, 2)))), ErrRecord, 1},
		{"header longer than record", datagram(flowSample(1, record(recordRawHeader, be32(nil, 1, 60, 0, 60, 0)))), ErrRecord, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Datagram
			samples, err := Decode(tt.b, &d, nil)
			if !errors.Is(err, tt.want) || len(samples) != tt.samples {
				t.Errorf("Decode = %d samples, %v; want %d, %v", len(samples), err, tt.samples, tt.want)
			}
		})
	}
}

func TestDecodeAllocs(t *testing.T) {
	dgrams := corpus(t)
	var d Datagram
	out := make([]FlowSample, 0, 64)
	var p Packet
	n := testing.AllocsPerRun(20, func() {
		for _, b := range dgrams {
			out, _ = Decode(b, &d, out[:0])
			for i := range out {
				ParseHeader(out[i].Header.Protocol, out[i].Header.Data, &p)
			}
		}
	})
	if n != 0 {
		t.Errorf("%.1f allocations per pass over %d datagrams, want 0", n, len(dgrams))
	}
}
