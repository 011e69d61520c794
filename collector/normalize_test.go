package collector

import (
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/collector/netflow"
	nt "github.com/ccflow/ccflow/collector/netflow/netflowtest"
	"github.com/ccflow/ccflow/collector/netflow5"
	"github.com/ccflow/ccflow/collector/sflow"
	"github.com/ccflow/ccflow/flow"
)

func TestNormV5Times(t *testing.T) {
	h := netflow5.Header{SysUptime: 100_000, UnixSecs: 1_700_000_000, UnixNsecs: 250_000_000, EngineType: 1, EngineID: 2, SamplingInterval: 0x4000 | 100}
	r := netflow5.Record{First: 40_000, Last: 99_000, SrcAddr: [4]byte{192, 0, 2, 1}, Octets: 10, Packets: 1}
	var got flow.Record
	normV5(&got, &h, &r, flow.Addr{}, 5)
	export := int64(1_700_000_000_250)
	if got.TimeStartMs != export-60_000 || got.TimeEndMs != export-1_000 {
		t.Errorf("times = %d, %d; want %d, %d", got.TimeStartMs, got.TimeEndMs, export-60_000, export-1_000)
	}
	if got.ObsDomain != 0x0102 || got.SamplingRate != 100 {
		t.Errorf("domain %#x rate %d", got.ObsDomain, got.SamplingRate)
	}
	// Uptime wrapped between the flow's start and the export.
	h.SysUptime = 1000
	r.First = 0xffffffff - 999
	normV5(&got, &h, &r, flow.Addr{}, 5)
	if got.TimeStartMs != export-2000 {
		t.Errorf("start across uptime wrap = %d, want %d", got.TimeStartMs, export-2000)
	}
}

func TestFlowTime(t *testing.T) {
	const exportSec = 1_700_000_000
	ntp := func(unixMs int64) uint64 {
		sec := uint64(unixMs/1000) + 2208988800
		frac := uint64(unixMs%1000) << 32 / 1000
		return sec<<32 | (frac + 1)
	}
	tests := []struct {
		name string
		set  func(r *netflow.Record)
		want int64
	}{
		{"milliseconds", func(r *netflow.Record) { netflow.SetField(r, 152, nt.U64(1_699_999_999_123)) }, 1_699_999_999_123},
		{"seconds", func(r *netflow.Record) { netflow.SetField(r, 150, nt.U32(1_699_999_990)) }, 1_699_999_990_000},
		{"ntp microseconds", func(r *netflow.Record) { netflow.SetField(r, 154, nt.U64(ntp(1_699_999_999_500))) }, 1_699_999_999_500},
		{"ntp nanoseconds", func(r *netflow.Record) { netflow.SetField(r, 156, nt.U64(ntp(1_699_999_999_007))) }, 1_699_999_999_007},
		{"delta microseconds", func(r *netflow.Record) { netflow.SetField(r, 158, nt.U32(2_500_000)) }, exportSec*1000 - 2500},
		{"v9 uptime", func(r *netflow.Record) {
			r.Version, r.SysUptime = 9, 60_000
			netflow.SetField(r, 22, nt.U32(30_000))
		}, exportSec*1000 - 30_000},
		{"ipfix uptime and system init", func(r *netflow.Record) {
			r.SystemInitMs = 1_699_000_000_000
			netflow.SetField(r, 22, nt.U32(5_000))
		}, 1_699_000_005_000},
		{"ipfix uptime without system init", func(r *netflow.Record) { netflow.SetField(r, 22, nt.U32(5_000)) }, exportSec * 1000},
		{"nothing", func(*netflow.Record) {}, exportSec * 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := netflow.Record{Version: 10, ExportSec: exportSec}
			tt.set(&r)
			if got := flowTime(&r, false); got != tt.want {
				t.Errorf("start = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestNormNetFlowFields(t *testing.T) {
	r := netflow.Record{Version: 10, Domain: 9, ExportSec: 1_700_000_000, SamplingRate: 64}
	for _, f := range []struct {
		ie uint16
		v  []byte
	}{
		{27, nt.Addr("2001:db8::1")}, {12, nt.Addr("198.51.100.1")}, {4, nt.U8(1)}, {32, nt.U16(0x0303)},
		{85, nt.U64(5000)}, {86, nt.U64(5)}, {61, nt.U8(1)}, {243, nt.U16(42)}, {10, nt.U32(3)}, {14, nt.U32(4)},
		{6, nt.U16(0x0112)}, {227, nt.U16(1024)},
	} {
		netflow.SetField(&r, f.ie, f.v)
	}
	var got flow.Record
	normNetFlow(&got, &r, flow.AddrFrom(exporterA))
	want := flow.Record{
		TimeStartMs: 1_700_000_000_000, TimeEndMs: 1_700_000_000_000, Protocol: flow.ProtocolIPFIX,
		Exporter: flow.AddrFrom(exporterA), ObsDomain: 9, InIf: 3, OutIf: 4,
		SrcAddr: flow.RawAddr(flow.AddrFromSlice(nt.Addr("2001:db8::1"))), DstAddr: flow.RawAddr(flow.AddrFromSlice(nt.Addr("198.51.100.1"))),
		DstPort: 0x0303, Proto: 1, TCPFlags: 0x12, Bytes: 5000, Packets: 5, SamplingRate: 64,
		Direction: flow.DirectionEgress, VLAN: 42, PostNATSrcPort: 1024,
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("record (-got +want):\n%s", diff)
	}
}

func TestNormSFlow(t *testing.T) {
	// The first sample of the real pmacctd corpus (Ethernet headers).
	b := corpusDatagrams(t, "sflow5-ethernet.pcap")[0].Payload
	var d sflow.Datagram
	samples, err := sflow.Decode(b, &d, nil)
	if err != nil || len(samples) == 0 {
		t.Fatalf("decode: %d samples, %v", len(samples), err)
	}
	var got flow.Record
	normSFlow(&got, &d, &samples[0], 42)
	s := samples[0]
	if got.Bytes != uint64(s.Header.FrameLength) || got.Packets != 1 || got.SamplingRate != s.SamplingRate ||
		got.TimeStartMs != 42 || got.Exporter != flow.AddrFromSlice(d.Agent()) || got.Proto == 0 || got.SrcAddr.IsZero() {
		t.Errorf("record = %+v", got)
	}
	if s.OutputFormat == 0 && got.OutIf != s.Output {
		t.Errorf("out interface %d, want %d", got.OutIf, s.Output)
	}
	// A discarded-packet output (format 1) is not an interface.
	s.OutputFormat, s.Output = 1, 5
	normSFlow(&got, &d, &s, 42)
	if got.OutIf != 0 {
		t.Errorf("out interface %d for a discarded packet", got.OutIf)
	}
}

func TestNtpToMs(t *testing.T) {
	var b [8]byte
	binary.BigEndian.PutUint32(b[:], 2208988800+1)
	binary.BigEndian.PutUint32(b[4:], 1<<31)
	if got := ntpToMs(binary.BigEndian.Uint64(b[:])); got != 1500 {
		t.Errorf("ntpToMs = %d, want 1500", got)
	}
}
