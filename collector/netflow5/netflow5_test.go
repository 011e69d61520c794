package netflow5

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/netsampler/goflow2/v2/decoders/netflowlegacy"

	"github.com/ccflow/ccflow/collector/pcap"
)

// corpus returns the real softflowd NetFlow v5 datagrams checked in under
// collector/testdata (see TestCorpus in package collector).
func corpus(t testing.TB) [][]byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "testdata", "netflow5.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ds, err := pcap.ReadDatagrams(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) == 0 {
		t.Fatal("empty corpus")
	}
	var out [][]byte
	for _, d := range ds {
		out = append(out, d.Payload)
	}
	return out
}

// reference decodes b with goflow2 v2.2.6 and converts the records that
// goflow2 actually read (it sizes its slice by the header count and leaves
// the records that do not fit zeroed) into this package's types.
func reference(b []byte) (Header, []Record, error) {
	var p netflowlegacy.PacketNetFlowV5
	if err := netflowlegacy.DecodeMessageVersion(bytes.NewBuffer(b), &p); err != nil {
		return Header{}, nil, err
	}
	h := Header{
		Version: p.Version, Count: p.Count, SysUptime: p.SysUptime, UnixSecs: p.UnixSecs,
		UnixNsecs: p.UnixNSecs, FlowSequence: p.FlowSequence, EngineType: p.EngineType,
		EngineID: p.EngineId, SamplingInterval: p.SamplingInterval,
	}
	n := min(int(p.Count), (len(b)-HeaderLen)/RecordLen)
	var recs []Record
	for _, r := range p.Records[:n] {
		a := func(x netflowlegacy.IPAddress) [4]byte {
			var o [4]byte
			binary.BigEndian.PutUint32(o[:], uint32(x))
			return o
		}
		recs = append(recs, Record{
			SrcAddr: a(r.SrcAddr), DstAddr: a(r.DstAddr), NextHop: a(r.NextHop),
			Input: r.Input, Output: r.Output, Packets: r.DPkts, Octets: r.DOctets,
			First: r.First, Last: r.Last, SrcPort: r.SrcPort, DstPort: r.DstPort,
			TCPFlags: r.TCPFlags, Proto: r.Proto, Tos: r.Tos, SrcAS: r.SrcAS, DstAS: r.DstAS,
			SrcMask: r.SrcMask, DstMask: r.DstMask,
		})
	}
	return h, recs, nil
}

// differential checks that Decode and goflow2 agree on b: both reject it,
// or both accept it with the same header and records.
func differential(t *testing.T, b []byte) {
	t.Helper()
	var h Header
	got, err := Decode(b, &h, nil)
	wh, want, werr := reference(b)
	if werr != nil {
		if err == nil {
			t.Fatalf("goflow2 rejects the datagram (%v), ccflow accepts it", werr)
		}
		return
	}
	if err != nil && !errors.Is(err, ErrCount) {
		t.Fatalf("goflow2 accepts the datagram, ccflow rejects it: %v", err)
	}
	// Plain equality first: cmp.Diff is only for the failure message (the
	// fuzzer runs this millions of times).
	if h != wh {
		t.Fatalf("header (-ccflow +goflow2):\n%s", cmp.Diff(h, wh))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("records (-ccflow +goflow2):\n%s", cmp.Diff(got, want))
	}
}

// TestDifferentialCorpus proves the decoder equal to goflow2 on every real
// datagram of the corpus.
func TestDifferentialCorpus(t *testing.T) {
	n := 0
	for _, b := range corpus(t) {
		differential(t, b)
		var h Header
		recs, _ := Decode(b, &h, nil)
		n += len(recs)
	}
	if n == 0 {
		t.Fatal("no records decoded")
	}
}

// FuzzNetFlow5 feeds mutated real datagrams to the decoder, which must not
// panic, and compares it with goflow2 on each input.
func FuzzNetFlow5(f *testing.F) {
	for _, b := range corpus(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		differential(t, b)
	})
}

func TestDecodeErrors(t *testing.T) {
	good := corpus(t)[0]
	tests := []struct {
		name    string
		b       []byte
		want    error
		records int
	}{
		{"empty", nil, ErrShort, 0},
		{"short header", good[:HeaderLen-1], ErrShort, 0},
		{"wrong version", append([]byte{0, 9}, good[2:]...), ErrVersion, 0},
		{"count beyond datagram", good[:HeaderLen+2*RecordLen+5], ErrCount, 2},
		{"complete", good, nil, int(binary.BigEndian.Uint16(good[2:]))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Header
			recs, err := Decode(tt.b, &h, nil)
			if !errors.Is(err, tt.want) || len(recs) != tt.records {
				t.Errorf("Decode = %d records, %v; want %d, %v", len(recs), err, tt.records, tt.want)
			}
		})
	}
}

func TestDecodeAllocs(t *testing.T) {
	b := corpus(t)[0]
	var h Header
	buf := make([]Record, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf, _ = Decode(b, &h, buf[:0]) }); n != 0 {
		t.Errorf("Decode allocates %.1f times per datagram, want 0", n)
	}
}
