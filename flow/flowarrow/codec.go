package flowarrow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/ipc"
	"github.com/apache/arrow/go/v15/arrow/memory"
	"github.com/ccflow/ccflow/flow"
	"github.com/klauspost/compress/zstd"
)

// Compression says how an Encoder compresses its IPC streams.
type Compression uint8

// Compressions. Decoders read all of them (they tell a zstd frame from a
// bare stream by its first bytes; Arrow buffer compression is in the
// stream's metadata).
const (
	// CompressionFrameZstd writes an uncompressed IPC stream inside one zstd
	// frame, with a zstd encoder that the Encoder reuses. It is the default:
	// Arrow Go v15's buffer compression starts a new streaming zstd encoder
	// for every record and dictionary batch (measured here: 43 MB allocated
	// and 10 ms per 8,192-flow stream), while the reused frame encoder
	// needs 0.15 MB and 3.5 ms and compresses as well or better. Readers
	// outside ccflow unwrap the frame with any zstd tool first.
	CompressionFrameZstd Compression = iota
	// CompressionBufferZstd uses Arrow IPC buffer compression with zstd:
	// readable by any Arrow IPC reader, but slow in Arrow Go v15 (above).
	CompressionBufferZstd
	// CompressionBufferLZ4 uses Arrow IPC buffer compression with LZ4
	// frames: fast, about twice as large as zstd.
	CompressionBufferLZ4
	// CompressionNone writes a bare, uncompressed IPC stream.
	CompressionNone
)

// ParseCompression parses "zstd" (CompressionFrameZstd), "arrow-zstd",
// "arrow-lz4" or "none".
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "zstd":
		return CompressionFrameZstd, nil
	case "arrow-zstd":
		return CompressionBufferZstd, nil
	case "arrow-lz4":
		return CompressionBufferLZ4, nil
	case "none":
		return CompressionNone, nil
	}
	return 0, fmt.Errorf("unknown flow compression %q (allowed: zstd, arrow-zstd, arrow-lz4, none)", s)
}

// Encoder turns batches of flows into self-contained Arrow IPC streams,
// optionally compressed (see Compression). With CompressionFrameZstd and
// CompressionNone it writes the compact wire schema (WireVersion 2: rows
// sorted by remote endpoint, per-message dictionaries, time offsets; see
// docs/bus.md); with Arrow buffer compression it writes the flow schema
// itself (WireVersionFlowSchema), which any Arrow reader reads as flows.
// It reuses its buffers and compressor between calls. An Encoder is not
// safe for concurrent use.
type Encoder struct {
	comp Compression
	wire *wireEncoder
	zenc *zstd.Encoder
	out  []byte // payloads of EncodeParts

	// Flow-schema streams (Arrow buffer compression).
	b    *Builder
	buf  bytes.Buffer
	opts []ipc.Option
}

// NewEncoder returns an Encoder using compression c.
func NewEncoder(c Compression) *Encoder {
	e := &Encoder{comp: c}
	switch c {
	case CompressionFrameZstd, CompressionNone:
		e.wire = newWireEncoder()
		if c == CompressionFrameZstd {
			// Errors only come from invalid options.
			e.zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
				zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(4<<20), zstd.WithZeroFrames(true))
		}
	case CompressionBufferZstd:
		e.b, e.opts = NewBuilder(), []ipc.Option{ipc.WithSchema(schema), ipc.WithZstd()}
	case CompressionBufferLZ4:
		e.b, e.opts = NewBuilder(), []ipc.Option{ipc.WithSchema(schema), ipc.WithLZ4()}
	}
	return e
}

// WireVersion returns the wire version of the streams e writes (the
// value of the bus's ccflow-schema header).
func (e *Encoder) WireVersion() int { return e.comp.WireVersion() }

// WireVersion returns the wire version of streams written with c:
// WireVersion for CompressionFrameZstd and CompressionNone,
// WireVersionFlowSchema for Arrow buffer compression.
func (c Compression) WireVersion() int {
	if c == CompressionFrameZstd || c == CompressionNone {
		return WireVersion
	}
	return WireVersionFlowSchema
}

// Encode appends to dst the IPC stream of flows travelling in batch id and
// returns the extended slice.
func (e *Encoder) Encode(dst []byte, id flow.BatchID, flows []flow.Pseudo) ([]byte, error) {
	return e.encode(dst, id, flows, nil)
}

// EncodeSelected is Encode for the flows flows[i] for i in sel (a
// producer splitting a batch by partition uses it to avoid copying
// flows). sel must not be nil.
func (e *Encoder) EncodeSelected(dst []byte, id flow.BatchID, flows []flow.Pseudo, sel []int32) ([]byte, error) {
	if sel == nil {
		sel = []int32{}
	}
	return e.encode(dst, id, flows, sel)
}

// EncodeParts encodes the flows of one batch split by partition, reading
// each flow once (flows are large and rarely in cache when a batch is
// published; selecting every partition's flows from the batch costs a
// third more): partOf names the partition of a flow, in [0, nparts). Each
// partition's flows go into messages of at most maxFlows flows (and at
// most 32,768 with wire version 2). For each message, id is called for its
// batch ID, then emit with its partition, its number of flows and its
// payload, which is valid only during the call. Messages come in no
// particular order. EncodeParts stops at the first error of emit.
func (e *Encoder) EncodeParts(flows []flow.Pseudo, nparts int, partOf func(*flow.Pseudo) int, maxFlows int,
	id func() flow.BatchID, emit func(partition, n int, payload []byte) error) error {
	if e.wire != nil {
		return e.wire.encodeParts(flows, nparts, partOf, maxFlows, id, func(part, n int, stream []byte) error {
			if e.zenc != nil {
				e.out = e.zenc.EncodeAll(stream, e.out[:0])
				return emit(part, n, e.out)
			}
			return emit(part, n, stream)
		})
	}
	// Flow-schema streams: select each partition's flows.
	sels := make([][]int32, nparts)
	for i := range flows {
		p := partOf(&flows[i])
		if p < 0 || p >= nparts {
			return fmt.Errorf("flow %d: partition %d not in [0, %d)", i, p, nparts)
		}
		sels[p] = append(sels[p], int32(i))
	}
	maxFlows = max(maxFlows, 1)
	for p, sel := range sels {
		for len(sel) > 0 {
			chunk := sel[:min(len(sel), maxFlows)]
			sel = sel[len(chunk):]
			var err error
			if e.out, err = e.encode(e.out[:0], id(), flows, chunk); err != nil {
				return err
			}
			if err := emit(p, len(chunk), e.out); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *Encoder) encode(dst []byte, id flow.BatchID, flows []flow.Pseudo, sel []int32) ([]byte, error) {
	if e.wire != nil {
		stream := e.wire.encode(id, flows, sel)
		if e.zenc != nil {
			return e.zenc.EncodeAll(stream, dst), nil
		}
		return append(dst, stream...), nil
	}
	e.b.Reset()
	if sel == nil {
		for i := range flows {
			e.b.Append(id, &flows[i])
		}
	} else {
		for _, i := range sel {
			e.b.Append(id, &flows[i])
		}
	}
	rec := e.b.Record()
	defer rec.Release()
	return e.EncodeRecord(dst, rec)
}

// EncodeRecord appends to dst the IPC stream of rec (a record of Schema())
// in the flow schema (WireVersionFlowSchema), compressed as e's
// compression says, and returns the extended slice.
func (e *Encoder) EncodeRecord(dst []byte, rec arrow.Record) ([]byte, error) {
	e.buf.Reset()
	opts := e.opts
	if opts == nil {
		opts = []ipc.Option{ipc.WithSchema(schema)}
	}
	w := ipc.NewWriter(&e.buf, opts...)
	if err := w.Write(rec); err != nil {
		_ = w.Close()
		return dst, fmt.Errorf("write arrow record: %w", err)
	}
	if err := w.Close(); err != nil {
		return dst, fmt.Errorf("close arrow stream: %w", err)
	}
	if e.zenc != nil {
		return e.zenc.EncodeAll(e.buf.Bytes(), dst), nil
	}
	return append(dst, e.buf.Bytes()...), nil
}

// ErrTooLarge is returned by Decoder.Decode when a stream asks for more
// memory than the decoder's limit.
var ErrTooLarge = errors.New("arrow stream exceeds the decoder's memory limit")

// Decoder reads the IPC streams of both wire versions back into flows. It
// never panics on malformed input: corrupt streams, streams of another
// schema and streams asking for more than the memory limit are errors,
// found before anything is allocated from a length the stream claims. A
// Decoder is safe for concurrent use.
type Decoder struct {
	limit int64
	zdec  *zstd.Decoder
	wire  sync.Pool // *wireDecoder
}

// NewDecoder returns a Decoder that refuses streams needing more than
// maxBytes of memory (decompressed stream, Arrow buffers and decoded
// flows); 0 means 1 GiB.
func NewDecoder(maxBytes int64) *Decoder {
	if maxBytes <= 0 {
		maxBytes = 1 << 30
	}
	// Errors only come from invalid options.
	zdec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(maxBytes)),
		zstd.WithDecoderMaxWindow(uint64(min(maxBytes, zstd.MaxWindowSize))))
	d := &Decoder{limit: maxBytes, zdec: zdec}
	d.wire.New = func() any { return newWireDecoder() }
	return d
}

// Decode appends the flows of the IPC stream payload to dst and returns the
// extended slice and the stream's batch ID. Wire version 2 streams come
// back sorted by remote endpoint, not in the order they were encoded. On
// error dst is returned unchanged.
func (d *Decoder) Decode(dst []flow.Pseudo, payload []byte) (out []flow.Pseudo, id flow.BatchID, err error) {
	start := len(dst)
	defer func() {
		if r := recover(); r != nil {
			out, id = dst[:start], flow.BatchID{}
			if r == errLimit {
				err = ErrTooLarge
				return
			}
			err = fmt.Errorf("corrupt arrow stream: %v", r)
		}
	}()
	wd := d.wire.Get().(*wireDecoder)
	defer d.wire.Put(wd)
	if bytes.HasPrefix(payload, zstdMagic) {
		if err := checkZstdFrame(payload, d.limit, d.limit); err != nil {
			return dst, id, fmt.Errorf("decompress zstd frame: %w", err)
		}
		raw, err := d.zdec.DecodeAll(payload, wd.raw[:0])
		if err != nil {
			return dst, id, fmt.Errorf("decompress zstd frame: %w", err)
		}
		if cap(raw) <= 64<<20 {
			wd.raw = raw // keep for the next stream
		}
		payload = raw
	}
	if t, wid, base, rest, err := matchWireSchema(payload); t != nil {
		// The limit covers the decompressed stream and the decoded flows.
		out, err := wd.decode(dst, t, base, rest, max(0, d.limit-int64(len(payload)))/rowSize)
		if err != nil {
			return dst, flow.BatchID{}, err
		}
		return out, wid, nil
	} else if err != ErrSchemaMismatch {
		return dst, id, err
	}
	return d.decodeFlowSchema(dst, payload)
}

// decodeFlowSchema decodes a stream of the flow schema (wire version 1)
// with Arrow's reader, after checking its framing.
func (d *Decoder) decodeFlowSchema(dst []flow.Pseudo, payload []byte) (out []flow.Pseudo, id flow.BatchID, err error) {
	// Arrow's schema reader trusts the counts in the schema message and can
	// exhaust memory on a corrupt one (not a recoverable panic), so the
	// schema message must be the one this package writes, byte for byte.
	if !bytes.HasPrefix(payload, schemaMessage()) {
		return dst, id, ErrSchemaMismatch
	}
	// Arrow's reader allocates what the stream's lengths claim (metadata
	// lengths even outside the allocator): check them all first.
	if err := checkStream(payload[len(schemaMessage()):], d.limit, rowSize, numColumns); err != nil {
		return dst, id, err
	}
	mem := &limitAllocator{limit: d.limit}
	r, err := ipc.NewReader(bytes.NewReader(payload), ipc.WithAllocator(mem))
	if err != nil {
		return dst, id, fmt.Errorf("read arrow stream: %w", err)
	}
	defer r.Release()
	if err := CheckSchema(r.Schema()); err != nil {
		return dst, id, err
	}
	out = dst
	first := true
	rows := int64(0)
	for r.Next() {
		rec := r.Record()
		rows += rec.NumRows()
		if rows < 0 || rows > (d.limit-mem.used.Load())/rowSize {
			return dst, flow.BatchID{}, ErrTooLarge
		}
		if first && rec.NumRows() > 0 {
			ids, err := AppendBatchIDs(nil, rec.NewSlice(0, 1))
			if err != nil {
				return dst, id, err
			}
			id, first = ids[0], false
		}
		if out, err = AppendFlows(out, rec); err != nil {
			return dst, flow.BatchID{}, err
		}
	}
	if err := r.Err(); err != nil {
		return dst, flow.BatchID{}, fmt.Errorf("read arrow stream: %w", err)
	}
	return out, id, nil
}

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// ErrSchemaMismatch is returned by Decoder.Decode when a stream does not
// start with the schema message of this package's Schema(): another schema,
// another schema version, or a corrupt stream.
var ErrSchemaMismatch = errors.New("arrow stream does not start with the ccflow flow schema")

// schemaMessage returns the encapsulated IPC schema message (continuation
// marker, length, flatbuffer) that starts every stream of Schema().
var schemaMessage = sync.OnceValue(func() []byte {
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Close(); err != nil {
		panic(err)
	}
	b := buf.Bytes()
	n := 8 + int(binary.LittleEndian.Uint32(b[4:8]))
	return append([]byte(nil), b[:n]...)
})

// errLimit is the panic value of limitAllocator (recovered by Decode).
var errLimit = errors.New("allocation limit")

// limitAllocator is a Go allocator that panics with errLimit when the
// bytes allocated exceed limit; Decode recovers.
type limitAllocator struct {
	used  atomic.Int64
	limit int64
}

var _ memory.Allocator = (*limitAllocator)(nil)

func (a *limitAllocator) Allocate(size int) []byte {
	if size < 0 || a.used.Add(int64(size)) > a.limit {
		panic(errLimit)
	}
	return memory.DefaultAllocator.Allocate(size)
}

func (a *limitAllocator) Reallocate(size int, b []byte) []byte {
	if size < 0 || a.used.Add(int64(size-len(b))) > a.limit {
		panic(errLimit)
	}
	return memory.DefaultAllocator.Reallocate(size, b)
}

func (a *limitAllocator) Free(b []byte) { memory.DefaultAllocator.Free(b) }
