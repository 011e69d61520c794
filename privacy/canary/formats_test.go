package canary

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/ipc"
	"github.com/apache/arrow/go/v15/arrow/memory"
	"github.com/apache/arrow/go/v15/parquet"
	"github.com/apache/arrow/go/v15/parquet/compress"
	"github.com/apache/arrow/go/v15/parquet/pqarrow"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/flow/flowtest"
)

var (
	canary4 = netip.MustParseAddr("192.0.2.7")
	canary6 = netip.MustParseAddr("2001:db8:7::7")
)

// canaryFlows returns generated flows (random pseudonyms) and, when leak
// is set, the same flows with the raw canary addresses as subscriber
// pseudonyms, as a stage with pseudonymization disabled would write them.
func canaryFlows(leak bool) []flow.Pseudo {
	flows := flowtest.Flows(7, 200)
	if leak {
		flows[3].Sub = flow.Pseudonym(canary4.As16())
		flows[150].Sub = flow.Pseudonym(canary6.As16())
	}
	return flows
}

// checkFound fails unless both canaries were found, each in a part whose
// path contains decoded (the decoder chain that must have led there).
func checkFound(t *testing.T, hits []Hit, decoded string) {
	t.Helper()
	for _, a := range []netip.Addr{canary4, canary6} {
		found := false
		for _, h := range hits {
			found = found || (h.Addr == a && strings.Contains(h.Where, decoded))
		}
		if !found {
			t.Errorf("canary %s not found in a part decoded by %q; %s", a, decoded, Report(hits, 10))
		}
	}
}

func TestArrowIPC(t *testing.T) {
	for _, comp := range []string{"zstd", "arrow-zstd", "arrow-lz4", "none"} {
		t.Run(comp, func(t *testing.T) {
			c, err := flowarrow.ParseCompression(comp)
			if err != nil {
				t.Fatal(err)
			}
			for _, leak := range []bool{false, true} {
				flows := canaryFlows(leak)
				payload, err := flowarrow.NewEncoder(c).Encode(nil, flow.BatchID{1}, flows)
				if err != nil {
					t.Fatal(err)
				}
				var counts Counts
				s := NewScanner(canary4, canary6)
				s.AddDecoder(ArrowIPC(&counts))
				hits, err := s.ScanBytes("value", payload)
				if err != nil {
					t.Fatal(err)
				}
				if counts.Inputs != 1 || counts.Flows != int64(len(flows)) || counts.Rows == 0 {
					t.Errorf("leak=%v: counts %+v, want 1 stream and %d flows", leak, counts, len(flows))
				}
				if !leak {
					if len(hits) > 0 {
						t.Errorf("pseudonymized flows: %s", Report(hits, 10))
					}
					continue
				}
				checkFound(t, hits, "!arrow:flow.Sub")
				checkFound(t, hits, "!arrow:rec0.")
				if comp != "none" {
					// Compressed: a plain search does not see the canaries.
					plain := NewScanner(canary4, canary6)
					plain.decoders = nil
					if h, _ := plain.ScanBytes("value", payload); len(h) > 0 {
						t.Logf("note: plain search found %d hits in the compressed stream", len(h))
					}
				}
			}
		})
	}
}

func TestArrowIPCStringValues(t *testing.T) {
	// A textual canary in a string column is found even when the next
	// value starts with a digit (values are emitted one per line).
	b := array.NewStringBuilder(memory.DefaultAllocator)
	b.AppendValues([]string{"192.0.2.7", "5", "x"}, nil)
	arr := b.NewArray()
	defer arr.Release()
	rec := array.NewRecord(arrow.NewSchema([]arrow.Field{{Name: "s", Type: arrow.BinaryTypes.String}}, nil), []arrow.Array{arr}, 3)
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var counts Counts
	s := NewScanner(canary4)
	s.AddDecoder(ArrowIPC(&counts))
	hits, err := s.ScanBytes("x", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if counts.Flows != 0 || counts.Rows != 3 {
		t.Errorf("counts %+v, want 3 rows and no flows", counts)
	}
	found := false
	for _, h := range hits {
		found = found || (h.Form == "ipv4-dotted" && strings.HasSuffix(h.Where, ".values"))
	}
	if !found {
		t.Errorf("dotted canary not found in the values part: %s", Report(hits, 10))
	}
}

func TestParquet(t *testing.T) {
	for _, leak := range []bool{false, true} {
		flows := canaryFlows(leak)
		b := flowarrow.NewBuilder()
		b.AppendBatch(flow.Batch{ID: flow.BatchID{2}, Flows: flows})
		rec := b.Record()
		tbl := array.NewTableFromRecords(rec.Schema(), []arrow.Record{rec})
		var buf bytes.Buffer
		props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd), parquet.WithStats(false))
		if err := pqarrow.WriteTable(tbl, &buf, 64, props, pqarrow.DefaultWriterProps()); err != nil {
			t.Fatal(err)
		}
		tbl.Release()
		rec.Release()

		var counts Counts
		s := NewScanner(canary4, canary6)
		s.AddDecoder(Parquet(&counts))
		hits, err := s.ScanBytes("flows.parquet", buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if counts.Inputs != 1 || counts.Rows != int64(len(flows)) || counts.Flows != int64(len(flows)) || counts.Records < 4 {
			t.Errorf("leak=%v: counts %+v, want 1 file, %d rows and flows in 4 row groups", leak, counts, len(flows))
		}
		if !leak {
			if len(hits) > 0 {
				t.Errorf("pseudonymized flows: %s", Report(hits, 10))
			}
			continue
		}
		checkFound(t, hits, "!parquet:flow.Sub")
		checkFound(t, hits, "!parquet:rg")
	}
}

// kafkaBatch encodes records (key, value, one header) as one Kafka record
// batch (message format v2) with compression codec.
func kafkaBatch(t *testing.T, base int64, codec uint16, recs [][3][]byte) []byte {
	t.Helper()
	var records []byte
	for i, r := range recs {
		var rec []byte
		rec = append(rec, 0)                             // attributes
		rec = binary.AppendVarint(rec, 0)                // timestamp delta
		rec = binary.AppendVarint(rec, int64(i))         // offset delta
		rec = binary.AppendVarint(rec, int64(len(r[0]))) // key
		rec = append(rec, r[0]...)
		rec = binary.AppendVarint(rec, int64(len(r[1]))) // value
		rec = append(rec, r[1]...)
		rec = binary.AppendVarint(rec, 1) // headers
		rec = binary.AppendVarint(rec, int64(len("h")))
		rec = append(rec, 'h')
		rec = binary.AppendVarint(rec, int64(len(r[2])))
		rec = append(rec, r[2]...)
		records = binary.AppendVarint(records, int64(len(rec)))
		records = append(records, rec...)
	}
	var buf bytes.Buffer
	switch codec {
	case 0:
		buf.Write(records)
	case 1:
		w := gzip.NewWriter(&buf)
		w.Write(records)
		w.Close()
	case 2:
		buf.Write(xerialHeader)
		buf.Write([]byte{0, 0, 0, 1, 0, 0, 0, 1})
		for len(records) > 0 {
			n := min(len(records), 100)
			blk := snappy.Encode(nil, records[:n])
			buf.Write(binary.BigEndian.AppendUint32(nil, uint32(len(blk))))
			buf.Write(blk)
			records = records[n:]
		}
	case 3:
		w := lz4.NewWriter(&buf)
		w.Write(records)
		w.Close()
	case 4:
		w, _ := zstd.NewWriter(&buf)
		w.Write(records)
		w.Close()
	}
	body := buf.Bytes()
	h := make([]byte, kafkaBatchHeader)
	binary.BigEndian.PutUint64(h, uint64(base))
	binary.BigEndian.PutUint32(h[8:], uint32(kafkaBatchHeader-12+len(body)))
	h[kafkaMagicOffset] = 2
	binary.BigEndian.PutUint16(h[kafkaAttrOffset:], codec)
	binary.BigEndian.PutUint32(h[23:], uint32(len(recs)-1))
	binary.BigEndian.PutUint64(h[45:], ^uint64(0)) // producer ID -1
	binary.BigEndian.PutUint32(h[kafkaCountOffset:], uint32(len(recs)))
	out := append(h, body...)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[kafkaCRCStart:], crc32c))
	return out
}

func TestKafkaBatches(t *testing.T) {
	leaky, err := flowarrow.NewEncoder(flowarrow.CompressionFrameZstd).Encode(nil, flow.BatchID{3}, canaryFlows(true))
	if err != nil {
		t.Fatal(err)
	}
	clean, err := flowarrow.NewEncoder(flowarrow.CompressionFrameZstd).Encode(nil, flow.BatchID{4}, canaryFlows(false))
	if err != nil {
		t.Fatal(err)
	}
	for codec, name := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(name, func(t *testing.T) {
			// Two batches: one clean record, then a leaky value and a
			// canary in a header; a partial third batch at the end.
			raw := kafkaBatch(t, 0, uint16(codec), [][3][]byte{{{0, 0, 0, 1}, clean, []byte("1")}})
			raw = append(raw, kafkaBatch(t, 1, uint16(codec), [][3][]byte{
				{{0, 0, 0, 2}, leaky, []byte("2")},
				{{0, 0, 0, 3}, []byte("v"), []byte("source 2001:db8:7::7")},
			})...)
			full := len(raw)
			raw = append(raw, kafkaBatch(t, 3, uint16(codec), [][3][]byte{{nil, clean, nil}})[:40]...)

			var kc, ac Counts
			s := NewScanner(canary4, canary6)
			s.AddDecoder(KafkaBatches(&kc))
			s.AddDecoder(ArrowIPC(&ac))
			hits, err := s.ScanBytes("flows-0"+KafkaSuffix, raw)
			if err != nil {
				t.Fatal(err)
			}
			if kc.Inputs != 2 || kc.Records != 3 || ac.Flows != 400 {
				t.Errorf("counts: kafka %+v, arrow %+v; want 2 batches, 3 records, 400 flows", kc, ac)
			}
			checkFound(t, hits, "!kafka:o1.value!zstd!arrow:flow.Sub")
			found := false
			for _, h := range hits {
				found = found || (h.Addr == canary6 && strings.HasSuffix(h.Where, "!kafka:o2.h0.value"))
			}
			if !found {
				t.Errorf("canary in a header value not found: %s", Report(hits, 10))
			}

			// A flipped bit is caught by the CRC.
			bad := bytes.Clone(raw[:full])
			bad[len(bad)-3] ^= 1
			if _, err := s.ScanBytes("flows-0"+KafkaSuffix, bad); err == nil || !strings.Contains(err.Error(), "CRC") {
				t.Errorf("flipped bit: %v, want a CRC error", err)
			}
		})
	}
}

// TestDecodersNeverPanic feeds damaged inputs to the format decoders:
// errors are fine, panics are not. Kafka batches get truncations and bit
// flips (with the CRC fixed, so that the record parser sees them); Arrow
// streams and Parquet files get truncations only: Arrow's and Parquet's
// readers trust the lengths inside a file, and a flipped bit in an Arrow
// schema message makes Arrow's reader allocate what it claims (tens of GB).
// The scanner reads the test's own outputs; see the package doc.
func TestDecodersNeverPanic(t *testing.T) {
	payload, err := flowarrow.NewEncoder(flowarrow.CompressionNone).Encode(nil, flow.BatchID{5}, canaryFlows(true)[:20])
	if err != nil {
		t.Fatal(err)
	}
	b := flowarrow.NewBuilder()
	b.AppendBatch(flow.Batch{ID: flow.BatchID{6}, Flows: canaryFlows(true)[:20]})
	rec := b.Record()
	tbl := array.NewTableFromRecords(rec.Schema(), []arrow.Record{rec})
	var pq bytes.Buffer
	if err := pqarrow.WriteTable(tbl, &pq, 64, nil, pqarrow.DefaultWriterProps()); err != nil {
		t.Fatal(err)
	}
	tbl.Release()
	rec.Release()
	kb := kafkaBatch(t, 0, 0, [][3][]byte{{{1}, payload, []byte("x")}})
	// Recompute the CRC after each flip so that the record parser, not
	// only the CRC check, sees the damage.
	fixCRC := func(b []byte) {
		if len(b) >= kafkaBatchHeader {
			binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[kafkaCRCStart:], crc32c))
		}
	}
	inputs := []struct {
		name  string
		data  []byte
		flips bool
		fix   func([]byte)
	}{
		{"value", payload, false, nil},
		{"f.parquet", pq.Bytes(), false, nil},
		{"t-0" + KafkaSuffix, kb, true, fixCRC},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, in := range inputs {
		s := NewScanner(canary4)
		s.AddDecoder(KafkaBatches(nil))
		if !in.flips {
			s.AddDecoder(ArrowIPC(nil))
			s.AddDecoder(Parquet(nil))
		}
		for i := 0; i < 300; i++ {
			d := bytes.Clone(in.data)
			switch {
			case i%3 == 0 || !in.flips:
				d = d[:rng.IntN(len(d))]
			default:
				for k := 0; k < 1+rng.IntN(4); k++ {
					d[rng.IntN(len(d))] ^= byte(1 << rng.IntN(8))
				}
			}
			if in.fix != nil {
				in.fix(d)
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("%s, case %d: panic: %v", in.name, i, r)
					}
				}()
				_, _ = s.ScanBytes(in.name, d)
			}()
		}
	}
}
