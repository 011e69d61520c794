package collector

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/collector/pcap"
	"github.com/ccflow/ccflow/testenv"
)

// TestRealExporters runs the real exporters into a running collector
// (through sockets) and compares what it decoded with what tshark's
// dissectors make of the same datagrams: the flow count, packet and byte
// totals, and every flow's addresses, ports and protocol. The datagrams are
// relayed to the collector as they arrive and written to a capture for
// tshark. In CI a missing exporter or tshark fails the test.
func TestRealExporters(t *testing.T) {
	type realExport struct {
		name     string
		listener string
		port     uint16
		export   func(t *testing.T, to netip.AddrPort) []pcap.Datagram
	}
	var tests []realExport
	for _, v := range []int{5, 9, 10} {
		for _, capture := range []string{"test-cc-capture-1.pcap", "test-cc-capture-2.pcap"} {
			listener, port := "netflow", uint16(2055)
			if v == 10 {
				listener, port = "ipfix", 4739
			}
			tests = append(tests, realExport{fmt.Sprintf("softflowd -v %d %s", v, capture), listener, port,
				func(t *testing.T, to netip.AddrPort) []pcap.Datagram {
					return softflowdExport(t, testenv.Data(t, "slips-test-cc", capture), v, to)
				}})
		}
	}
	tests = append(tests,
		realExport{"pmacctd sfprobe ethernet (header_protocol 1)", "sflow", 6343,
			func(t *testing.T, to netip.AddrPort) []pcap.Datagram {
				return pmacctSFlowExport(t, testenv.Data(t, "slips-test-cc", "test-cc-capture-2.pcap"), to)
			}},
		realExport{"pmacctd sfprobe raw ip (header_protocol 11)", "sflow", 6343,
			func(t *testing.T, to netip.AddrPort) []pcap.Datagram {
				return pmacctSFlowExport(t, rawIPCapture(t, testenv.Data(t, "slips-test-cc", "test-cc-capture-2.pcap")), to)
			}},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testenv.Tool(t, "tshark")
			h := &collecting{}
			reg := prometheus.NewRegistry()
			c := startCollector(t, loopbackConfig(), h, reg, nil)
			dgrams := tt.export(t, c.Addrs()[tt.listener])
			if len(dgrams) == 0 {
				t.Fatal("the exporter sent nothing")
			}
			capture := filepath.Join(t.TempDir(), "export.pcap")
			writeCapture(t, capture, dgrams, tt.port)
			var want []tuple
			if tt.port == 6343 {
				want = tsharkSFlow(t, capture)
			} else {
				want = tsharkNetFlow(t, capture)
			}
			wantFlows, wantPackets, wantBytes := totals(want)
			if wantFlows == 0 {
				t.Fatal("tshark found no flows")
			}
			waitFor(t, 10*time.Second, func() bool { return len(h.records()) >= wantFlows })
			recs := h.records()
			var got []tuple
			for i := range recs {
				got = append(got, tupleOf(&recs[i]))
			}
			flows, packets, bytes := totals(got)
			if flows != wantFlows || packets != wantPackets || bytes != wantBytes {
				t.Errorf("ccflow: %d flows, %d packets, %d bytes; tshark: %d flows, %d packets, %d bytes",
					flows, packets, bytes, wantFlows, wantPackets, wantBytes)
			}
			sortTuples(got)
			sortTuples(want)
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("flows differ (-ccflow +tshark):\n%s", diff)
			}
			var datagrams float64
			for _, p := range []string{"netflow5", "netflow9", "ipfix", "sflow5"} {
				datagrams += testutil.ToFloat64(c.m.datagrams.WithLabelValues("127.0.0.1", p))
			}
			if int(datagrams) != len(dgrams) {
				t.Errorf("datagrams counted = %v, sent %d", datagrams, len(dgrams))
			}
			if n := testutil.CollectAndCount(c.m.decodeErrors); n != 0 {
				t.Errorf("%d decode-error series on a real export", n)
			}
			t.Logf("%d datagrams, %d flows, %d packets, %d bytes: equal to tshark", len(dgrams), flows, packets, bytes)
		})
	}
}
