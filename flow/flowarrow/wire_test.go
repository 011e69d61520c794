package flowarrow

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/ipc"
	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowtest"
)

// TestWireReadByArrow reads a wire stream (two record batches, so with
// replacement dictionaries) with Arrow's own IPC reader and rebuilds the
// flows from the columns by the documented inverse transforms: the
// stream is valid Arrow, and the transforms are what docs/bus.md says.
func TestWireReadByArrow(t *testing.T) {
	flows := append(flowtest.Flows(3, wireMaxRows+500), wideFlows()[:3]...) // narrow
	for _, wide := range []bool{false, true} {
		in := flows
		if wide {
			in = wideFlows()
		}
		id := flow.BatchID{0xab, 1, 2, 3}
		payload, err := NewEncoder(CompressionNone).Encode(nil, id, in)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ipc.NewReader(bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		md := r.Schema().Metadata()
		if v, _ := md.GetValue(metaWireVersion); v != "2" {
			t.Errorf("wire version %q", v)
		}
		if v, _ := md.GetValue(MetadataVersionKey); v != "1" {
			t.Errorf("schema version %q", v)
		}
		if v, _ := md.GetValue(metaBatchID); v != hex.EncodeToString(id[:]) {
			t.Errorf("batch id %q", v)
		}
		tb, _ := md.GetValue(metaTimeBase)
		base, err := strconv.ParseInt(tb, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		var got []flow.Pseudo
		for r.Next() {
			got = append(got, flowsFromWireRecord(t, r.Record(), base)...)
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		r.Release()
		if diff := cmp.Diff(canonical(in), canonical(got)); diff != "" {
			t.Errorf("wide=%v: flows rebuilt from Arrow's reading differ (-want +got):\n%s", wide, diff)
		}
	}
}

// flowsFromWireRecord applies the inverse wire transforms to a record read
// by Arrow.
func flowsFromWireRecord(t *testing.T, rec arrow.Record, base int64) []flow.Pseudo {
	t.Helper()
	n := int(rec.NumRows())
	out := make([]flow.Pseudo, n)
	col := func(name string) arrow.Array {
		idx := rec.Schema().FieldIndices(name)
		if len(idx) != 1 {
			t.Fatalf("no column %s", name)
		}
		return rec.Column(idx[0])
	}
	num := func(name string, i int) uint64 {
		switch a := col(name).(type) {
		case *array.Uint8:
			return uint64(a.Value(i))
		case *array.Uint16:
			return uint64(a.Value(i))
		case *array.Uint32:
			return uint64(a.Value(i))
		case *array.Uint64:
			return a.Value(i)
		case *array.Int32:
			return uint64(int64(a.Value(i)))
		case *array.Int64:
			return uint64(a.Value(i))
		}
		t.Fatalf("column %s: type %s", name, col(name).DataType())
		return 0
	}
	dict := func(name string, i int) arrow.Array {
		d := col(name).(*array.Dictionary)
		return array.NewSlice(d.Dictionary(), int64(d.GetValueIndex(i)), int64(d.GetValueIndex(i)+1))
	}
	str := func(name string, i int) string {
		s := dict(name, i)
		defer s.Release()
		return s.(*array.String).Value(0)
	}
	addr := func(name string, i int) (a [16]byte) {
		s := dict(name, i)
		defer s.Release()
		copy(a[:], s.(*array.FixedSizeBinary).Value(0))
		return a
	}
	index := func(names []string, v string) uint8 {
		for j, n := range names {
			if n == v {
				return uint8(j)
			}
		}
		t.Fatalf("unknown enum value %q", v)
		return 0
	}
	for i := range out {
		p := &out[i]
		p.TimeStartMs = base + int64(num(WireColTimeStartOffset, i))
		p.TimeEndMs = p.TimeStartMs + int64(num(WireColDuration, i))
		p.Protocol = flow.Protocol(index(protocolDict, str(ColExportProto, i)))
		p.Exporter = addr(ColExporter, i)
		p.ObsDomain, p.InIf, p.OutIf = uint32(num(ColObsDomain, i)), uint32(num(ColInIf, i)), uint32(num(ColOutIf, i))
		p.Kind = flow.Kind(index(kindDict, str(ColKind, i)))
		p.Direction = flow.Dir(index(directionDict, str(ColDirection, i)))
		p.Epoch = uint32(num(ColEpoch, i))
		p.Sub, p.SubPort = addr(ColSub, i), uint16(num(ColSubPort, i))
		p.Peer, p.PeerPort = addr(ColPeer, i), uint16(num(ColPeerPort, i))
		p.Remote, p.RemotePort = addr(ColRemoteAddr, i), uint16(num(ColRemotePort, i))
		p.TransitSrc, p.TransitSrcPort = addr(ColTransitSrc, i), uint16(num(ColTransitSrcPort, i))
		p.Proto, p.TCPFlags = uint8(num(ColProto, i)), uint8(num(ColTCPFlags, i))
		p.Bytes, p.Packets = num(ColBytes, i), num(ColPackets, i)
		p.SamplingRate, p.RemoteASN = uint32(num(ColSamplingRate, i)), uint32(num(ColRemoteASN, i))
		p.RemoteASOrg, p.RemoteCountry = str(ColRemoteASOrg, i), str(ColRemoteCountry, i)
		p.Provider, p.Intel = str(ColRemoteProvider, i), str(ColIntel, i)
		p.ExporterName, p.InIfName, p.OutIfName = str(ColExporterName, i), str(ColInIfName, i), str(ColOutIfName, i)
	}
	return out
}

// TestWireReadByPyArrow has Arrow's C++ implementation (pyarrow) read
// and fully validate a wire stream. pyarrow is installed by .ci/run; on a
// machine without it the test skips, in CI it fails.
func TestWireReadByPyArrow(t *testing.T) {
	if err := exec.Command("python3", "-c", "import pyarrow").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pyarrow not available in CI: %v", err)
		}
		t.Skip("python3 with pyarrow not available")
	}
	flows := flowtest.Flows(4, wireMaxRows+100)
	payload, err := NewEncoder(CompressionNone).Encode(nil, flow.BatchID{1}, flows)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wire.arrows")
	if err := os.WriteFile(path, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	script := `
import sys, pyarrow.ipc as ipc
r = ipc.open_stream(open(sys.argv[1], 'rb').read())
rows = total = 0
for b in r:
    b.validate(full=True)
    rows += b.num_rows
    total += sum(b.column('bytes').to_pylist())
print(rows, total, r.schema.metadata[b'ccflow.wire_version'].decode())
`
	out, err := exec.Command("python3", "-c", script, path).CombinedOutput()
	if err != nil {
		t.Fatalf("pyarrow: %v\n%s", err, out)
	}
	var bytes uint64
	for i := range flows {
		bytes += flows[i].Bytes
	}
	if got, want := strings.TrimSpace(string(out)), strconv.Itoa(len(flows))+" "+strconv.FormatUint(bytes, 10)+" 2"; got != want {
		t.Errorf("pyarrow read %q, want %q", got, want)
	}
}

// TestWireDecodeAllocs pins the steady state of the decoder: with room in
// dst and dictionaries it has seen, decoding allocates nothing.
func TestWireDecodeAllocs(t *testing.T) {
	flows := flowtest.Flows(5, 4000)
	payload, err := NewEncoder(CompressionFrameZstd).Encode(nil, flow.BatchID{1}, flows)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder(0)
	out := make([]flow.Pseudo, 0, len(flows))
	if allocs := testing.AllocsPerRun(20, func() {
		if out, _, err = d.Decode(out[:0], payload); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("%.1f allocations per decode", allocs)
	}
}

// TestWireEncodeAllocs pins the steady state of the encoder.
func TestWireEncodeAllocs(t *testing.T) {
	flows := flowtest.Flows(6, 4000)
	enc := NewEncoder(CompressionFrameZstd)
	buf := make([]byte, 0, 1<<20)
	var err error
	if allocs := testing.AllocsPerRun(20, func() {
		if buf, err = enc.Encode(buf[:0], flow.BatchID{1}, flows); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("%.1f allocations per encode", allocs)
	}
}

// TestWireUnaligned decodes a bare stream that does not start at an
// 8-byte boundary (as in a fetched Kafka batch): the decoder reads
// little-endian values without assuming alignment.
func TestWireUnaligned(t *testing.T) {
	flows := flowtest.Flows(8, 3000)
	payload, err := NewEncoder(CompressionNone).Encode(nil, flow.BatchID{3}, flows)
	if err != nil {
		t.Fatal(err)
	}
	for off := 1; off < 8; off++ {
		buf := append(make([]byte, off, off+len(payload)), payload...)
		got, _, err := NewDecoder(0).Decode(nil, buf[off:])
		if err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		if diff := cmp.Diff(canonical(flows), canonical(got)); diff != "" {
			t.Fatalf("offset %d: (-want +got):\n%s", off, diff)
		}
	}
}

// TestEncodeParts checks the one-pass split: every flow comes back once,
// in a message of its partition, messages hold at most maxFlows flows,
// and each message carries the ID it was given.
func TestEncodeParts(t *testing.T) {
	flows := flowtest.Flows(9, wireMaxRows+2000)
	want := canonical(flows)
	for _, tc := range []struct {
		comp             Compression
		nparts, maxFlows int
	}{
		{CompressionFrameZstd, 5, 1000},
		{CompressionFrameZstd, 1, 100000}, // capped at 32,768 a message
		{CompressionNone, 5, 32768},
		{CompressionBufferLZ4, 3, 30000},
	} {
		c, nparts, maxFlows := tc.comp, tc.nparts, tc.maxFlows
		partOf := func(f *flow.Pseudo) int { return int(f.Remote[15]+f.Peer[3]) % nparts }
		enc := NewEncoder(c)
		var got []flow.Pseudo
		seq, msgs := byte(0), 0
		var cur flow.BatchID
		err := enc.EncodeParts(flows, nparts, partOf, maxFlows,
			func() flow.BatchID { seq++; cur = flow.BatchID{seq}; return cur },
			func(part, n int, payload []byte) error {
				msgs++
				out, id, err := NewDecoder(0).Decode(nil, payload)
				if err != nil {
					return err
				}
				if id != cur || len(out) != n || n > maxFlows || (c.WireVersion() == WireVersion && n > wireMaxRows) {
					t.Errorf("%+v: message %v: id %v, %d flows (said %d)", tc, cur, id, len(out), n)
				}
				for i := range out {
					if partOf(&out[i]) != part {
						t.Fatalf("%+v: a flow of partition %d in a message of %d", tc, partOf(&out[i]), part)
					}
				}
				got = append(got, out...)
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, canonical(got)); diff != "" {
			t.Errorf("%+v: flows differ (-want +got):\n%s", tc, diff)
		}
		t.Logf("%+v: %d messages", tc, msgs)
	}
}
