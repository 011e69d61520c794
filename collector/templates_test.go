package collector

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	nt "github.com/ccflow/ccflow/collector/netflow/netflowtest"
	"github.com/ccflow/ccflow/flow"
)

// These tests drive the collector's decoding path (exporter table,
// NetFlow v9/IPFIX sessions, normalization, metrics) with builder-made
// datagrams from documentation addresses.

var (
	exporterA = netip.MustParseAddr("192.0.2.10")
	exporterB = netip.MustParseAddr("192.0.2.20")
)

// flowView is the part of a flow.Record these tests look at.
type flowView struct {
	Proto            flow.Protocol
	Src, Dst         string
	SrcPort, DstPort uint16
	Bytes, Packets   uint64
	SamplingRate     uint32
}

func view(recs []flow.Record) []flowView {
	out := []flowView{}
	for _, r := range recs {
		out = append(out, flowView{r.Protocol, r.SrcAddr.Addr().String(), r.DstAddr.Addr().String(), r.SrcPort, r.DstPort, r.Bytes, r.Packets, r.SamplingRate})
	}
	return out
}

// harness is a collector decoding path with its own metrics registry.
type harness struct {
	t   *testing.T
	w   *worker
	reg *prometheus.Registry
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(cfg, Deps{Handler: &collecting{}, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, w: newWorker(c, &socket{spec: listenerSpec{key: "ipfix", cfg: cfg.IPFIX, fallback: flow.ProtocolIPFIX}}), reg: reg}
}

// send decodes one datagram from src and returns its records.
func (h *harness) send(src netip.Addr, b []byte) []flow.Record {
	h.t.Helper()
	h.w.datagram(b, src, false, 1_700_000_000_000)
	out := append([]flow.Record(nil), h.w.out...)
	h.w.out = h.w.out[:0]
	return out
}

func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	var c prometheus.Collector
	m := h.w.c.m
	switch name {
	case "flows":
		c = m.flows.WithLabelValues(labels...)
	case "datagrams":
		c = m.datagrams.WithLabelValues(labels...)
	case "decode_errors":
		c = m.decodeErrors.WithLabelValues(labels...)
	case "template_misses":
		c = m.templateMisses.WithLabelValues(labels...)
	case "pending":
		c = m.pendingSets.WithLabelValues(labels...)
	case "templates":
		c = m.templates.WithLabelValues(labels...)
	default:
		h.t.Fatalf("unknown metric %s", name)
	}
	return testutil.ToFloat64(c)
}

var (
	tSrc4    = nt.Field{Type: 8, Length: 4}
	tDst4    = nt.Field{Type: 12, Length: 4}
	tSrc6    = nt.Field{Type: 27, Length: 16}
	tDst6    = nt.Field{Type: 28, Length: 16}
	tOctets4 = nt.Field{Type: 1, Length: 4}
	tOctets8 = nt.Field{Type: 1, Length: 8}
	tPkts4   = nt.Field{Type: 2, Length: 4}
	tSport   = nt.Field{Type: 7, Length: 2}
	tDport   = nt.Field{Type: 11, Length: 2}
	tProto   = nt.Field{Type: 4, Length: 1}
)

func TestDataBeforeTemplate(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	data := nt.IPFIX(1, 1_700_000_000).Data(300,
		nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(1000), nt.U32(2)),
		nt.Record(nt.Addr("192.0.2.2"), nt.Addr("198.51.100.2"), nt.U32(3000), nt.U32(4)),
	).Bytes()
	if recs := h.send(exporterA, data); len(recs) != 0 {
		t.Fatalf("data without template gave %d records", len(recs))
	}
	recs := h.send(exporterA, nt.IPFIX(1, 1_700_000_001).Template(300, tSrc4, tDst4, tOctets4, tPkts4).Bytes())
	want := []flowView{
		{flow.ProtocolIPFIX, "192.0.2.1", "198.51.100.1", 0, 0, 1000, 2, 0},
		{flow.ProtocolIPFIX, "192.0.2.2", "198.51.100.2", 0, 0, 3000, 4, 0},
	}
	if diff := cmp.Diff(view(recs), want); diff != "" {
		t.Errorf("records released by the template (-got +want):\n%s", diff)
	}
	a := exporterA.String()
	if got := h.metric("template_misses", a); got != 1 {
		t.Errorf("template misses = %v, want 1", got)
	}
	if got := h.metric("pending", a, "released"); got != 1 {
		t.Errorf("released sets = %v, want 1", got)
	}
	if got := h.metric("flows", a, "ipfix"); got != 2 {
		t.Errorf("flows = %v, want 2", got)
	}
	if got := h.metric("templates", a); got != 1 {
		t.Errorf("templates = %v, want 1", got)
	}
}

func TestTemplateRefreshWithNewLayout(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	recs := h.send(exporterA, nt.IPFIX(1, 1_700_000_000).
		Template(300, tSrc4, tDst4, tOctets4).
		Data(300, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(1500))).Bytes())
	recs = append(recs, h.send(exporterA, nt.IPFIX(1, 1_700_000_060).
		Template(300, tSrc6, tDst6, tSport, tDport, tProto, tOctets8, tPkts4).
		Data(300, nt.Record(nt.Addr("2001:db8::1"), nt.Addr("2001:db8::2"), nt.U16(40000), nt.U16(443), nt.U8(6), nt.U64(1<<33), nt.U32(9))).Bytes())...)
	want := []flowView{
		{flow.ProtocolIPFIX, "192.0.2.1", "198.51.100.1", 0, 0, 1500, 0, 0},
		{flow.ProtocolIPFIX, "2001:db8::1", "2001:db8::2", 40000, 443, 1 << 33, 9, 0},
	}
	if diff := cmp.Diff(view(recs), want); diff != "" {
		t.Errorf("records before and after the refresh (-got +want):\n%s", diff)
	}
}

func TestTwoExportersSameTemplateID(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	// Both exporters use template 256 in domain 0, with different layouts;
	// their data sets interleave.
	h.send(exporterA, nt.V9(0, 1_700_000_000, 10_000).Template(256, tSrc4, tDst4, tOctets4, tPkts4).Bytes())
	h.send(exporterB, nt.V9(0, 1_700_000_000, 10_000).Template(256, tPkts4, tOctets4, tDport, tSrc4, tDst4).Bytes())
	var recs []flow.Record
	recs = append(recs, h.send(exporterA, nt.V9(0, 1_700_000_000, 10_000).Data(256, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(100), nt.U32(1))).Bytes())...)
	recs = append(recs, h.send(exporterB, nt.V9(0, 1_700_000_000, 10_000).Data(256, nt.Record(nt.U32(2), nt.U32(200), nt.U16(53), nt.Addr("203.0.113.1"), nt.Addr("203.0.113.2"))).Bytes())...)
	recs = append(recs, h.send(exporterA, nt.V9(0, 1_700_000_000, 10_000).Data(256, nt.Record(nt.Addr("192.0.2.3"), nt.Addr("198.51.100.3"), nt.U32(300), nt.U32(3))).Bytes())...)
	want := []flowView{
		{flow.ProtocolNetFlow9, "192.0.2.1", "198.51.100.1", 0, 0, 100, 1, 0},
		{flow.ProtocolNetFlow9, "203.0.113.1", "203.0.113.2", 0, 53, 200, 2, 0},
		{flow.ProtocolNetFlow9, "192.0.2.3", "198.51.100.3", 0, 0, 300, 3, 0},
	}
	if diff := cmp.Diff(view(recs), want); diff != "" {
		t.Errorf("records (-got +want):\n%s", diff)
	}
	if recs[1].Exporter != flow.AddrFrom(exporterB) {
		t.Errorf("exporter of B's record = %v", recs[1].Exporter)
	}
}

func TestIPFIXVariableLengthFields(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	name := []byte(strings.Repeat("ge-0/0/0.", 40)) // > 255 bytes: 3-byte length prefix
	recs := h.send(exporterA, nt.IPFIX(1, 1_700_000_000).
		Template(400,
			nt.Field{Type: 82, Length: nt.VarLen}, // interfaceName
			tSrc4,
			nt.Field{Type: 1, Length: 8, PEN: 29305}, // enterprise field numbered like octetDeltaCount
			nt.Field{Type: 12, Length: nt.VarLen},    // destinationIPv4Address sent variable-length
			nt.Field{Type: 83, Length: nt.VarLen},    // interfaceDescription, empty
			tOctets4, tPkts4).
		Data(400,
			nt.Record(nt.Var([]byte("eth0")), nt.Addr("192.0.2.1"), nt.U64(999), nt.Var(nt.Addr("198.51.100.1")), nt.Var(nil), nt.U32(1000), nt.U32(10)),
			nt.Record(nt.Var(name), nt.Addr("192.0.2.2"), nt.U64(999), nt.Var(nt.Addr("198.51.100.2")), nt.Var(nil), nt.U32(2000), nt.U32(20)),
		).Bytes())
	want := []flowView{
		{flow.ProtocolIPFIX, "192.0.2.1", "198.51.100.1", 0, 0, 1000, 10, 0},
		{flow.ProtocolIPFIX, "192.0.2.2", "198.51.100.2", 0, 0, 2000, 20, 0},
	}
	if diff := cmp.Diff(view(recs), want); diff != "" {
		t.Errorf("records (-got +want):\n%s", diff)
	}
}

func TestOptionsTemplateSamplingApplied(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want []uint32
	}{
		{
			// NetFlow v9: options announce FLOW_SAMPLER_ID 1 at
			// FLOW_SAMPLER_RANDOM_INTERVAL 100; flows name sampler 1.
			"netflow9 sampler random interval",
			nt.V9(3, 1_700_000_000, 10_000).
				OptionsTemplate(257, []nt.Field{{Type: 1, Length: 4}}, []nt.Field{{Type: 48, Length: 1}, {Type: 49, Length: 1}, {Type: 50, Length: 4}}).
				Data(257, nt.Record(nt.U32(0), nt.U8(1), nt.U8(2), nt.U32(100))).
				Template(256, tSrc4, tDst4, tOctets4, tPkts4, nt.Field{Type: 48, Length: 1}).
				Data(256, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(100), nt.U32(1), nt.U8(1))).Bytes(),
			[]uint32{100},
		},
		{
			// NetFlow v9: an interface-scoped SAMPLING_INTERVAL with no
			// sampler ID applies to the whole source ID.
			"netflow9 sampling interval",
			nt.V9(3, 1_700_000_000, 10_000).
				OptionsTemplate(257, []nt.Field{{Type: 2, Length: 4}}, []nt.Field{{Type: 34, Length: 4}, {Type: 35, Length: 1}}).
				Data(257, nt.Record(nt.U32(5), nt.U32(2000), nt.U8(2))).
				Template(256, tSrc4, tDst4, tOctets4, tPkts4).
				Data(256, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(100), nt.U32(1))).Bytes(),
			[]uint32{2000},
		},
		{
			// IPFIX: selector 9 selects 1 packet, then skips 999.
			"ipfix sampling packet interval and space",
			nt.IPFIX(3, 1_700_000_000).
				OptionsTemplate(257, []nt.Field{{Type: 302, Length: 8}}, []nt.Field{{Type: 305, Length: 4}, {Type: 306, Length: 4}}).
				Data(257, nt.Record(nt.U64(9), nt.U32(1), nt.U32(999))).
				Template(256, tSrc4, tDst4, tOctets4, tPkts4, nt.Field{Type: 302, Length: 8}).
				Data(256, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(100), nt.U32(1), nt.U64(9))).Bytes(),
			[]uint32{1000},
		},
		{
			// IPFIX: a samplingInterval in the data record itself wins.
			"ipfix record's own sampling interval",
			nt.IPFIX(3, 1_700_000_000).
				Template(256, tSrc4, tDst4, tOctets4, tPkts4, nt.Field{Type: 34, Length: 4}).
				Data(256, nt.Record(nt.Addr("192.0.2.1"), nt.Addr("198.51.100.1"), nt.U32(100), nt.U32(1), nt.U32(4096))).Bytes(),
			[]uint32{4096},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			var got []uint32
			for _, r := range h.send(exporterA, tt.b) {
				got = append(got, r.SamplingRate)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("sampling rates (-got +want):\n%s", diff)
			}
		})
	}
}

func TestBadInputCountedPerExporterAndReason(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Templates.Max = 2
	h := newHarness(t, cfg)
	flood := nt.IPFIX(1, 1)
	for i := range 3 {
		flood.Template(uint16(300+i), tSrc4)
	}
	v5 := corpusDatagrams(t, "netflow5.pcap")[0]
	sf := corpusDatagrams(t, "sflow5-ethernet.pcap")[0].Payload
	inputs := []struct {
		src netip.Addr
		b   []byte
	}{
		{exporterA, []byte{0, 10, 0}},                         // truncated IPFIX header
		{exporterA, []byte{0, 7, 0, 0, 0, 0}},                 // unknown version
		{exporterA, flood.Bytes()},                            // template flood
		{exporterA, nt.V9(1, 1, 1).Template(256).Bytes()},     // zero-length template
		{exporterB, v5.Payload[:len(v5.Payload)-48]},          // v5 count beyond datagram
		{exporterB, sf[:len(sf)-10]},                          // sFlow sample cut
		{exporterB, []byte{0, 0, 0, 5, 0, 0, 0, 9}},           // sFlow bad agent type
		{exporterB, nt.IPFIX(1, 1).Set(7, []byte{0}).Bytes()}, // reserved set ID
	}
	for _, in := range inputs {
		h.send(in.src, in.b)
	}
	a, b := exporterA.String(), exporterB.String()
	want := map[[3]string]float64{
		{a, "ipfix", "truncated"}:               1,
		{a, "ipfix", "bad_version"}:             1,
		{a, "ipfix", "template_limit"}:          1,
		{a, "netflow9", "zero_length_template"}: 1,
		{b, "netflow5", "bad_count"}:            1,
		{b, "sflow5", "truncated"}:              1,
		{b, "sflow5", "bad_agent"}:              1,
		{b, "ipfix", "bad_set"}:                 1,
	}
	for k, v := range want {
		if got := h.metric("decode_errors", k[0], k[1], k[2]); got != v {
			t.Errorf("decode errors %v = %v, want %v", k, got, v)
		}
	}
	if n := testutil.CollectAndCount(h.w.c.m.decodeErrors); n != len(want) {
		t.Errorf("%d decode-error series, want %d", n, len(want))
	}
}
