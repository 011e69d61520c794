package collector

import (
	"bytes"
	"testing"

	gfnetflow "github.com/netsampler/goflow2/v2/decoders/netflow"
	gflegacy "github.com/netsampler/goflow2/v2/decoders/netflowlegacy"
	gfsflow "github.com/netsampler/goflow2/v2/decoders/sflow"

	"github.com/ccflow/ccflow/collector/pcap"
)

// benchCorpora are the real exporter captures the benchmarks replay.
var benchCorpora = []struct{ name, file string }{
	{"netflow5", "netflow5.pcap"},
	{"netflow9", "netflow9.pcap"},
	{"ipfix", "ipfix.pcap"},
	{"sflow5", "sflow5-ethernet.pcap"},
	{"sflow5-ipv4", "sflow5-ipv4.pcap"},
}

// BenchmarkDecode measures decode+normalize on one core: the collector's
// per-datagram path (exporter lookup, decoding, template session,
// normalization to flow.Record, metrics) over real softflowd and pmacctd
// datagrams, without sockets. records/s counts flow.Records produced
// (sFlow: flow samples).
func BenchmarkDecode(b *testing.B) {
	for _, c := range benchCorpora {
		b.Run(c.name, func(b *testing.B) {
			ds := corpusDatagrams(b, c.file)
			w := testWorker(b, DefaultConfig())
			records := 0
			for _, d := range ds {
				w.datagram(d.Payload, d.Src.Addr(), false, 1)
				records += len(w.out)
				w.out = w.out[:0]
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for _, d := range ds {
					w.datagram(d.Payload, d.Src.Addr(), false, 1)
					w.out = w.out[:0]
				}
			}
			b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(len(ds))*float64(b.N)/b.Elapsed().Seconds(), "datagrams/s")
		})
	}
}

// BenchmarkGoflow2Decode measures goflow2 v2.2.6's decoders alone (no
// normalization) on the same datagrams, for comparison.
func BenchmarkGoflow2Decode(b *testing.B) {
	for _, c := range benchCorpora {
		b.Run(c.name, func(b *testing.B) {
			ds := corpusDatagrams(b, c.file)
			records := goflow2Pass(b, ds, gfnetflow.CreateTemplateSystem())
			ts := gfnetflow.CreateTemplateSystem()
			goflow2Pass(b, ds, ts)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				goflow2Pass(b, ds, ts)
			}
			b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

func goflow2Pass(b *testing.B, ds []pcap.Datagram, ts gfnetflow.NetFlowTemplateSystem) int {
	n := 0
	for _, d := range ds {
		p := d.Payload
		switch {
		case p[1] == 5:
			var pk gflegacy.PacketNetFlowV5
			if err := gflegacy.DecodeMessageVersion(bytes.NewBuffer(p), &pk); err != nil {
				b.Fatal(err)
			}
			n += len(pk.Records)
		case p[1] == 9 || p[1] == 10:
			var v9 gfnetflow.NFv9Packet
			var ipfix gfnetflow.IPFIXPacket
			if err := gfnetflow.DecodeMessageVersion(bytes.NewBuffer(p), ts, &v9, &ipfix); err != nil {
				b.Fatal(err)
			}
			for _, fs := range append(v9.FlowSets, ipfix.FlowSets...) {
				if d, ok := fs.(gfnetflow.DataFlowSet); ok {
					n += len(d.Records)
				}
			}
		default:
			var pk gfsflow.Packet
			if err := gfsflow.DecodeMessageVersion(bytes.NewBuffer(p), &pk); err != nil {
				b.Fatal(err)
			}
			for _, s := range pk.Samples {
				switch s.(type) {
				case gfsflow.FlowSample, gfsflow.ExpandedFlowSample:
					n++
				}
			}
		}
	}
	return n
}
