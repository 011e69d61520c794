package collector

import (
	"flag"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/collector/pcap"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

var update = flag.Bool("update", false, "regenerate testdata/*.pcap from the real exporters (softflowd, pmacctd)")

// corpusSFlowDatagrams keeps the sFlow corpus files small.
const corpusSFlowDatagrams = 40

// corpus lists the checked-in captures of real exporter datagrams. They are
// the seed corpus of the fuzz targets, the input of the differential tests
// against goflow2 and of the decoding benchmarks. `go test ./collector -run
// TestCorpus -update` regenerates them from the shared public captures.
var corpus = []struct {
	file string
	port uint16
	gen  func(t *testing.T) []pcap.Datagram
}{
	{"netflow5.pcap", 2055, func(t *testing.T) []pcap.Datagram {
		return softflowdExport(t, testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap"), 5, netip.AddrPort{})
	}},
	{"netflow9.pcap", 2055, func(t *testing.T) []pcap.Datagram {
		return softflowdExport(t, testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap"), 9, netip.AddrPort{})
	}},
	{"ipfix.pcap", 4739, func(t *testing.T) []pcap.Datagram {
		return softflowdExport(t, testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap"), 10, netip.AddrPort{})
	}},
	{"sflow5-ethernet.pcap", 6343, func(t *testing.T) []pcap.Datagram {
		d := pmacctSFlowExport(t, testenv.Data(t, "slips-test-cc", "test-cc-capture-2.pcap"), netip.AddrPort{})
		return d[:min(len(d), corpusSFlowDatagrams)]
	}},
	{"sflow5-ipv4.pcap", 6343, func(t *testing.T) []pcap.Datagram {
		raw := rawIPCapture(t, testenv.Data(t, "slips-test-cc", "test-cc-capture-2.pcap"))
		d := pmacctSFlowExport(t, raw, netip.AddrPort{})
		return d[:min(len(d), corpusSFlowDatagrams)]
	}},
}

// TestCorpus regenerates the corpus with -update, and checks that ccflow's
// decoders and tshark's dissectors find the same flows in every corpus
// file.
func TestCorpus(t *testing.T) {
	for _, c := range corpus {
		t.Run(c.file, func(t *testing.T) {
			path := filepath.Join("testdata", c.file)
			if *update {
				d := c.gen(t)
				if len(d) == 0 {
					t.Fatal("the exporter sent nothing")
				}
				writeCapture(t, path, d, c.port)
			}
			recs := decodeAll(t, readCapture(t, path))
			var got []tuple
			for i := range recs {
				got = append(got, tupleOf(&recs[i]))
			}
			var want []tuple
			if c.port == 6343 {
				want = tsharkSFlow(t, path)
			} else {
				want = tsharkNetFlow(t, path)
			}
			sortTuples(got)
			sortTuples(want)
			if len(want) == 0 {
				t.Fatal("tshark found no flows")
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("ccflow and tshark disagree (-ccflow +tshark):\n%s", diff)
			}
		})
	}
}

// decodeAll decodes datagrams with a collector's decoding path (no
// sockets) and returns the records.
func decodeAll(t testing.TB, dgrams []pcap.Datagram) []flow.Record {
	t.Helper()
	w := testWorker(t, DefaultConfig())
	var out []flow.Record
	for _, d := range dgrams {
		w.datagram(d.Payload, d.Src.Addr(), false, d.Time.UnixMilli())
		out = append(out, w.out...)
		w.out = w.out[:0]
	}
	return out
}

// testWorker returns a worker of a collector built from cfg, without a
// socket, for driving the decoding path directly.
func testWorker(t testing.TB, cfg Config) *worker {
	t.Helper()
	c, err := New(cfg, Deps{Handler: &collecting{}})
	if err != nil {
		t.Fatal(err)
	}
	return newWorker(c, &socket{spec: listenerSpec{key: "netflow", cfg: cfg.NetFlow, fallback: flow.ProtocolNetFlow9}})
}

// corpusDatagrams reads one corpus file.
func corpusDatagrams(t testing.TB, file string) []pcap.Datagram {
	t.Helper()
	return readCapture(t, filepath.Join("testdata", file))
}
