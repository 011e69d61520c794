package flowarrow

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowtest"
	"github.com/google/go-cmp/cmp"
)

// TestSchemaMatchesDoc pins the schema to the column table of
// docs/schema.md: same names, same order, same Arrow types.
func TestSchemaMatchesDoc(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "docs", "schema.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type col struct{ Name, Type string }
	var doc []col
	sc := bufio.NewScanner(f)
	inFlows := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "| column |") {
			inFlows = true
			continue
		}
		if inFlows && !strings.HasPrefix(line, "|") {
			break
		}
		if !inFlows || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(line, "|")
		doc = append(doc, col{strings.Trim(strings.TrimSpace(cells[1]), "`"), strings.TrimSpace(cells[3])})
	}
	var got []col
	for _, f := range Schema().Fields() {
		got = append(got, col{f.Name, docType(f.Type)})
	}
	if diff := cmp.Diff(got, doc); diff != "" {
		t.Errorf("schema differs from docs/schema.md (-code +doc):\n%s", diff)
	}
}

// docType writes an Arrow type the way docs/schema.md does.
func docType(t arrow.DataType) string {
	switch t := t.(type) {
	case *arrow.TimestampType:
		return "timestamp[" + t.Unit.String() + ", " + t.TimeZone + "]"
	case *arrow.DictionaryType:
		return "dictionary<" + t.ValueType.String() + ">"
	}
	return t.String()
}

func TestSchemaVersionInMetadata(t *testing.T) {
	v, ok := Schema().Metadata().GetValue(MetadataVersionKey)
	if !ok || v != "1" {
		t.Errorf("metadata %s = %q, %v; want \"1\"", MetadataVersionKey, v, ok)
	}
	if err := CheckSchema(Schema()); err != nil {
		t.Error(err)
	}
}

// Flows returns n realistic pseudonymized flows (deterministic for seed):
// a few thousand subscribers talking to a skewed set of remote endpoints.
func testFlows(seed uint64, n int) []flow.Pseudo {
	r := rand.New(rand.NewPCG(seed, 1))
	orgs := []string{"", "GOOGLE", "AMAZON-02", "CLOUDFLARENET", "HETZNER-AS", "OVH SAS"}
	countries := []string{"", "US", "DE", "FR", "NL", "RU"}
	providers := []string{"", "cloud", "cdn", "push"}
	intel := []string{"", "", "", "", "", "", "", "", "", "feodo", "feodo,sslbl"}
	out := make([]flow.Pseudo, n)
	base := int64(1_760_000_000_000)
	for i := range out {
		var sub flow.Pseudonym
		binary.BigEndian.PutUint64(sub[:], uint64(r.IntN(5000))*0x9e3779b97f4a7c15)
		binary.BigEndian.PutUint64(sub[8:], uint64(r.IntN(5000))*0xc2b2ae3d27d4eb4f)
		remote := netip.AddrFrom4([4]byte{byte(20 + r.IntN(200)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
		start := base + int64(i)*3 + int64(r.IntN(50))
		a := r.IntN(len(orgs))
		out[i] = flow.Pseudo{
			TimeStartMs:   start,
			TimeEndMs:     start + int64(r.IntN(60000)),
			Protocol:      flow.ProtocolIPFIX,
			Exporter:      flow.AddrFrom(netip.MustParseAddr("192.0.2.1")),
			ObsDomain:     1,
			InIf:          uint32(1 + r.IntN(4)),
			OutIf:         uint32(1 + r.IntN(4)),
			Kind:          flow.KindSubscriber,
			Direction:     flow.Dir(1 + r.IntN(2)),
			Epoch:         2900,
			Sub:           sub,
			SubPort:       uint16(32768 + r.IntN(28000)),
			Remote:        flow.AddrFrom(remote),
			RemotePort:    []uint16{443, 80, 53, 8080, 123}[r.IntN(5)],
			Proto:         []uint8{6, 6, 6, 17}[r.IntN(4)],
			TCPFlags:      0x1b,
			Bytes:         uint64(40 + r.IntN(100000)),
			Packets:       uint64(1 + r.IntN(100)),
			SamplingRate:  1,
			RemoteASN:     uint32(a * 1000),
			RemoteASOrg:   orgs[a],
			RemoteCountry: countries[a],
			Provider:      providers[a%len(providers)],
			Intel:         intel[r.IntN(len(intel))],
			ExporterName:  "edge1",
			InIfName:      "xe-0/0/1",
			OutIfName:     "xe-0/0/2",
		}
	}
	// Some other kinds.
	if n > 3 {
		out[1].Kind, out[1].Peer, out[1].PeerPort, out[1].Remote, out[1].RemotePort = flow.KindBoth, flow.Pseudonym{9}, 22, flow.Addr{}, 0
		out[2].Kind, out[2].Sub, out[2].Direction = flow.KindTransit, flow.Pseudonym{}, flow.DirUnknown
		out[2].TransitSrc, out[2].TransitSrcPort = flow.AddrFrom(netip.MustParseAddr("2001:db8::1")), 4444
		out[3].Protocol = flow.ProtocolSFlow5
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	id := flow.BatchID{1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9}
	tests := []struct {
		name  string
		flows []flow.Pseudo
		comp  Compression
	}{
		{"empty", nil, CompressionFrameZstd},
		{"one", testFlows(1, 1), CompressionFrameZstd},
		{"many zstd frame", testFlows(2, 5000), CompressionFrameZstd},
		{"many arrow zstd", testFlows(2, 3000), CompressionBufferZstd},
		{"many lz4", testFlows(3, 5000), CompressionBufferLZ4},
		{"many none", testFlows(4, 100), CompressionNone},
		{"flowtest zstd frame", flowtest.Flows(5, 20000), CompressionFrameZstd},
		{"two record batches", flowtest.Flows(6, wireMaxRows+1000), CompressionFrameZstd},
		{"wide", wideFlows(), CompressionFrameZstd},
		{"wide none", wideFlows(), CompressionNone},
	}
	enc := NewEncoder(CompressionFrameZstd)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := enc
			if tt.comp != CompressionFrameZstd {
				enc = NewEncoder(tt.comp)
			}
			payload, err := enc.Encode(nil, id, tt.flows)
			if err != nil {
				t.Fatal(err)
			}
			got, gotID, err := NewDecoder(0).Decode(nil, payload)
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.flows) > 0 && gotID != id {
				t.Errorf("batch id = %v, want %v", gotID, id)
			}
			// Wire version 2 sorts a message by remote endpoint.
			if diff := cmp.Diff(canonical(tt.flows), canonical(got)); diff != "" && len(tt.flows) > 0 {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if len(got) != len(tt.flows) {
				t.Errorf("got %d flows, want %d", len(got), len(tt.flows))
			}
		})
	}
}

// canonical returns flows in a canonical order (the wire does not keep
// the order of a message's flows).
func canonical(flows []flow.Pseudo) []flow.Pseudo {
	keys := make([]string, len(flows))
	idx := make([]int, len(flows))
	for i := range flows {
		keys[i] = fmt.Sprintf("%+v", flows[i])
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
	out := make([]flow.Pseudo, len(flows))
	for i, j := range idx {
		out[i] = flows[j]
	}
	return out
}

// wideFlows returns flows whose values need the wide wire variant: event
// times far apart, negative and long durations, counters above 2^32.
func wideFlows() []flow.Pseudo {
	flows := testFlows(9, 50)
	flows[5].TimeStartMs, flows[5].TimeEndMs = math.MinInt64, math.MaxInt64
	flows[6].TimeStartMs, flows[6].TimeEndMs = math.MaxInt64, math.MinInt64
	flows[7].TimeEndMs = flows[7].TimeStartMs - 1
	flows[8].Bytes, flows[8].Packets = math.MaxUint64, 1<<40
	flows[9].TimeStartMs = 0
	return flows
}

// TestBuilderReuse checks that a builder reused across batches of
// different sizes gives each batch back exactly.
func TestBuilderReuse(t *testing.T) {
	b := NewBuilder()
	for i, n := range []int{100, 7, 300, 0, 50} {
		flows := testFlows(uint64(i+10), n)
		b.Reset()
		b.AppendBatch(flow.Batch{ID: flow.BatchID{byte(i)}, Flows: flows})
		rec := b.Record()
		got, err := AppendFlows(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := AppendBatchIDs(nil, rec)
		if err != nil {
			t.Fatal(err)
		}
		rec.Release()
		if len(got) != n || (n > 0 && !cmp.Equal(got, flows)) {
			t.Errorf("batch %d: round trip differs: %s", i, cmp.Diff(flows, got))
		}
		for _, id := range ids {
			if id != (flow.BatchID{byte(i)}) {
				t.Fatalf("batch %d: batch id %v", i, id)
			}
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, c := range []Compression{CompressionNone, CompressionFrameZstd, CompressionBufferLZ4} {
		payload, err := NewEncoder(c).Encode(nil, flow.BatchID{1}, testFlows(5, 1000))
		if err != nil {
			t.Fatal(err)
		}
		d := NewDecoder(64 << 20)
		// Every truncation and many bit flips: an error or the right count,
		// never a panic or a runaway allocation. A wire version 2 stream
		// must end with its end-of-stream marker: every truncation is an
		// error.
		for cut := 0; cut < len(payload); cut += 1 + cut/16 {
			got, _, err := d.Decode(nil, payload[:cut])
			if err == nil && len(got) != 1000 && (len(got) != 0 || c.WireVersion() == WireVersion) {
				t.Fatalf("compression %d: truncated at %d: %d flows, no error", c, cut, len(got))
			}
		}
		r := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 2000; i++ {
			bad := append([]byte(nil), payload...)
			for j := 0; j < 1+r.IntN(4); j++ {
				bad[r.IntN(len(bad))] ^= byte(1 << r.IntN(8))
			}
			_, _, _ = d.Decode(nil, bad)
		}
		if _, _, err := NewDecoder(1000).Decode(nil, payload); err == nil {
			t.Errorf("compression %d: decoder with a 1000-byte limit accepted a large stream", c)
		}
	}
	if _, _, err := NewDecoder(0).Decode(nil, []byte("not arrow at all")); err == nil {
		t.Error("garbage accepted")
	}
}

// TestDecodeHostileLengths feeds streams whose lengths claim far more
// than the stream holds: each must fail fast, allocating next to nothing
// (a metadata length of 2 GiB once made Arrow's reader allocate it, and
// the fuzzer's workers died).
func TestDecodeHostileLengths(t *testing.T) {
	schemaMsg := schemaMessage()
	le32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	zstdHeader := func(fcs uint64) []byte {
		// Magic, FHD: 8-byte content size, single segment.
		return binary.LittleEndian.AppendUint64([]byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0}, fcs)
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{"huge metadata length", cat(schemaMsg, le32(0xFFFFFFFF), le32(0x7FFFFFF0), make([]byte, 64))},
		{"negative metadata length", cat(schemaMsg, le32(0xFFFFFFFF), le32(0x80000010), make([]byte, 64))},
		{"legacy length prefix", cat(schemaMsg, le32(0x7FFFFFF0), make([]byte, 64))},
		{"zstd frame claiming 1 TiB", zstdHeader(1 << 40)},
		{"zstd frame claiming 2^63", zstdHeader(1 << 63)},
	}
	d := NewDecoder(1 << 20)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := d.Decode(nil, tt.payload)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("accepted")
			}
			if a := after.TotalAlloc - before.TotalAlloc; a > 1<<20 {
				t.Errorf("allocated %d bytes for a %d-byte payload (%v)", a, len(tt.payload), err)
			}
		})
	}
}

// TestDecodeLimit checks that the memory limit covers the decoded flows:
// a decoder refuses a stream whose flows alone would exceed it.
func TestDecodeLimit(t *testing.T) {
	flows := flowtest.Flows(7, 10000)
	for _, c := range []Compression{CompressionFrameZstd, CompressionBufferLZ4} {
		payload, err := NewEncoder(c).Encode(nil, flow.BatchID{1}, flows)
		if err != nil {
			t.Fatal(err)
		}
		need := int64(len(flows)) * rowSize
		if _, _, err := NewDecoder(need).Decode(nil, payload); !errors.Is(err, ErrTooLarge) {
			t.Errorf("compression %d: limit of exactly the flows' size: err = %v, want ErrTooLarge", c, err)
		}
		if got, _, err := NewDecoder(4*need).Decode(nil, payload); err != nil || len(got) != len(flows) {
			t.Errorf("compression %d: limit of 4 times the flows' size: %d flows, %v", c, len(got), err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range []Compression{CompressionNone, CompressionFrameZstd, CompressionBufferZstd, CompressionBufferLZ4} {
		// Small seeds: the fuzzer mutates and minimizes faster.
		payload, err := NewEncoder(c).Encode(nil, flow.BatchID{1}, flowtest.Flows(6, 6))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(payload)
	}
	f.Add([]byte{})
	// A small limit keeps every execution cheap; the limit itself is
	// what large claims run into.
	d := NewDecoder(1 << 20)
	enc := NewEncoder(CompressionNone)
	f.Fuzz(func(t *testing.T, b []byte) {
		flows, id, err := d.Decode(nil, b)
		if err != nil {
			return
		}
		// Whatever decodes is flows the wire can carry: encoding them
		// again gives them back.
		again, err := enc.Encode(nil, id, flows)
		if err != nil {
			t.Fatal(err)
		}
		back, id2, err := NewDecoder(0).Decode(nil, again)
		if err != nil || (id2 != id && len(flows) > 0) {
			t.Fatalf("re-encoded stream: id %v (want %v), %v", id2, id, err)
		}
		if diff := cmp.Diff(canonical(flows), canonical(back)); diff != "" {
			t.Fatalf("re-encoded flows differ (-decoded +again):\n%s", diff)
		}
	})
}

func BenchmarkBuild(b *testing.B) {
	flows := flowtest.Flows(9, 8192)
	bl := NewBuilder()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		bl.Reset()
		for j := range flows {
			bl.Append(flow.BatchID{1}, &flows[j])
		}
		bl.Record().Release()
	}
	b.ReportMetric(float64(b.N*len(flows))/b.Elapsed().Seconds(), "flows/s")
}
