package flowarrow

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// This file reads the framing of Arrow IPC streams (encapsulated messages
// with flatbuffer metadata) without trusting any length in them: every
// offset is checked against the bytes actually present, so a hostile
// stream costs at most a pass over its own bytes. Decoder uses it before
// anything allocates from a length the stream claims.

// IPC message header types (Message.header_type in Arrow's Message.fbs).
const (
	msgSchema          = 1
	msgDictionaryBatch = 2
	msgRecordBatch     = 3
)

// Arrow's BodyCompression.codec values.
const (
	codecLZ4Frame = 0
	codecZstd     = 1
)

// ipcContinuation starts every encapsulated message (Arrow ≥ 0.15).
const ipcContinuation = 0xFFFFFFFF

// errCorrupt is wrapped by every framing error.
var errCorrupt = errors.New("corrupt arrow stream")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
}

// ipcMessage is one encapsulated message of a stream: its flatbuffer
// metadata and its body, both slices of the stream.
type ipcMessage struct {
	kind int // msgSchema, msgDictionaryBatch or msgRecordBatch
	meta []byte
	// header is the message's header table (Schema, DictionaryBatch or
	// RecordBatch) inside meta.
	header fbTable
	body   []byte
}

// nextMessage reads the encapsulated message at the start of b and returns
// it and the rest of b. At the end-of-stream marker (or the end of b) it
// returns ok=false and no error. Only messages with the continuation
// marker are accepted.
func nextMessage(b []byte) (m ipcMessage, rest []byte, ok bool, err error) {
	if len(b) == 0 {
		return m, nil, false, nil
	}
	if len(b) < 8 {
		return m, nil, false, corruptf("truncated message prefix")
	}
	if binary.LittleEndian.Uint32(b) != ipcContinuation {
		return m, nil, false, corruptf("missing continuation marker")
	}
	metaLen := int64(int32(binary.LittleEndian.Uint32(b[4:])))
	if metaLen == 0 {
		return m, b[8:], false, nil // end of stream
	}
	if metaLen < 0 || metaLen > int64(len(b)-8) {
		return m, nil, false, corruptf("message metadata of %d bytes, %d left", metaLen, len(b)-8)
	}
	m.meta = b[8 : 8+metaLen]
	rest = b[8+metaLen:]
	root, ok := fbRoot(m.meta)
	if !ok {
		return m, nil, false, corruptf("bad message flatbuffer")
	}
	// Message: version (0), header_type (1), header (2), bodyLength (3).
	kind, ok1 := root.uint8(1, 0)
	hdr, ok2 := root.table(2)
	bodyLen, ok3 := root.int64(3, 0)
	if !ok1 || !ok2 || !ok3 {
		return m, nil, false, corruptf("bad message header")
	}
	if bodyLen < 0 || bodyLen > int64(len(rest)) {
		return m, nil, false, corruptf("message body of %d bytes, %d left", bodyLen, len(rest))
	}
	m.kind, m.header = int(kind), hdr
	m.body, rest = rest[:bodyLen], rest[bodyLen:]
	return m, rest, true, nil
}

// fieldNode is Arrow's FieldNode struct.
type fieldNode struct{ length, nulls int64 }

// bufferRef is Arrow's Buffer struct: a region of the message body.
type bufferRef struct{ offset, length int64 }

// recordBatch is a parsed RecordBatch table (also the data of a
// DictionaryBatch).
type recordBatch struct {
	length  int64
	nodes   []fieldNode
	buffers []bufferRef
	// codec is the BodyCompression codec, or -1 when the buffers are not
	// compressed.
	codec int
}

// parseRecordBatch reads a RecordBatch table. maxNodes and maxBuffers bound
// the vectors (a stream of a known schema has known counts). Every buffer
// must lie inside body. The nodes and buffers are appended to those of
// scratch, whose memory the result reuses.
func parseRecordBatch(t fbTable, body []byte, maxNodes, maxBuffers int, scratch *recordBatch) (recordBatch, error) {
	rb := recordBatch{nodes: scratch.nodes[:0], buffers: scratch.buffers[:0]}
	var ok bool
	if rb.length, ok = t.int64(0, 0); !ok || rb.length < 0 {
		return rb, corruptf("bad record batch length")
	}
	nodes, n, ok := t.vector(1, 16)
	if !ok || n > maxNodes {
		return rb, corruptf("bad record batch nodes")
	}
	for i := range n {
		rb.nodes = append(rb.nodes, fieldNode{int64(binary.LittleEndian.Uint64(nodes[16*i:])), int64(binary.LittleEndian.Uint64(nodes[16*i+8:]))})
	}
	bufs, n, ok := t.vector(2, 16)
	if !ok || n > maxBuffers {
		return rb, corruptf("bad record batch buffers")
	}
	for i := range n {
		r := bufferRef{int64(binary.LittleEndian.Uint64(bufs[16*i:])), int64(binary.LittleEndian.Uint64(bufs[16*i+8:]))}
		if r.offset < 0 || r.length < 0 || r.offset > int64(len(body)) || r.length > int64(len(body))-r.offset {
			return rb, corruptf("buffer %d outside the message body", i)
		}
		rb.buffers = append(rb.buffers, r)
	}
	*scratch = rb
	rb.codec = -1
	if c, present, ok := t.optTable(3); !ok {
		return rb, corruptf("bad body compression")
	} else if present {
		codec, ok1 := c.uint8(0, codecLZ4Frame)
		method, ok2 := c.uint8(1, 0)
		if !ok1 || !ok2 || method != 0 || (codec != codecLZ4Frame && codec != codecZstd) {
			return rb, corruptf("unknown body compression")
		}
		rb.codec = int(codec)
	}
	if _, n, ok := t.vector(4, 8); !ok || n != 0 {
		return rb, corruptf("unexpected variadic buffer counts")
	}
	return rb, nil
}

// fbTable is a flatbuffer table: the buffer and the table's position. Its
// accessors check every offset and return ok=false instead of panicking.
type fbTable struct {
	b   []byte
	pos int
}

// fbRoot returns the root table of buffer b.
func fbRoot(b []byte) (fbTable, bool) {
	if len(b) < 4 {
		return fbTable{}, false
	}
	return fbTableAt(b, int(binary.LittleEndian.Uint32(b)))
}

func fbTableAt(b []byte, pos int) (fbTable, bool) {
	if pos < 0 || pos > len(b)-4 {
		return fbTable{}, false
	}
	t := fbTable{b, pos}
	vt := t.vtable()
	if vt < 0 || vt > len(b)-4 {
		return fbTable{}, false
	}
	vlen := int(binary.LittleEndian.Uint16(b[vt:]))
	if vlen < 4 || vlen&1 != 0 || vt+vlen > len(b) {
		return fbTable{}, false
	}
	return t, true
}

func (t fbTable) vtable() int {
	return t.pos - int(int32(binary.LittleEndian.Uint32(t.b[t.pos:])))
}

// field returns the position of field i, 0 when absent, or -1 when the
// table is malformed. size is the bytes the field needs.
func (t fbTable) field(i, size int) int {
	vt := t.vtable()
	vlen := int(binary.LittleEndian.Uint16(t.b[vt:]))
	o := 4 + 2*i
	if o+2 > vlen {
		return 0
	}
	off := int(binary.LittleEndian.Uint16(t.b[vt+o:]))
	if off == 0 {
		return 0
	}
	p := t.pos + off
	if p+size > len(t.b) {
		return -1
	}
	return p
}

func (t fbTable) uint8(i int, def uint8) (uint8, bool) {
	switch p := t.field(i, 1); {
	case p < 0:
		return 0, false
	case p == 0:
		return def, true
	default:
		return t.b[p], true
	}
}

func (t fbTable) int64(i int, def int64) (int64, bool) {
	switch p := t.field(i, 8); {
	case p < 0:
		return 0, false
	case p == 0:
		return def, true
	default:
		return int64(binary.LittleEndian.Uint64(t.b[p:])), true
	}
}

// ref follows the offset stored in field i; 0 when absent, -1 when bad.
func (t fbTable) ref(i int) int {
	p := t.field(i, 4)
	if p <= 0 {
		return p
	}
	q := p + int(binary.LittleEndian.Uint32(t.b[p:]))
	if q < 0 || q > len(t.b)-4 {
		return -1
	}
	return q
}

// table returns the table in field i, which must be present.
func (t fbTable) table(i int) (fbTable, bool) {
	sub, present, ok := t.optTable(i)
	return sub, ok && present
}

// optTable returns the table in field i, if present.
func (t fbTable) optTable(i int) (sub fbTable, present, ok bool) {
	switch q := t.ref(i); {
	case q < 0:
		return fbTable{}, false, false
	case q == 0:
		return fbTable{}, false, true
	default:
		sub, ok = fbTableAt(t.b, q)
		return sub, true, ok
	}
}

// vector returns the bytes of the vector in field i of elements of size
// elem, and its length; an absent vector is empty.
func (t fbTable) vector(i, elem int) ([]byte, int, bool) {
	q := t.ref(i)
	switch {
	case q < 0:
		return nil, 0, false
	case q == 0:
		return nil, 0, true
	}
	n := int64(binary.LittleEndian.Uint32(t.b[q:]))
	start := q + 4
	if n*int64(elem) > int64(len(t.b)-start) {
		return nil, 0, false
	}
	return t.b[start : start+int(n)*elem], int(n), true
}

// maxStreamMessages bounds the messages of one stream: an Encoder writes
// a schema, one dictionary batch per dictionary column and one record
// batch per 32,768 rows at most.
const maxStreamMessages = 256

// checkStream walks the messages of stream (after its schema message,
// already checked) and refuses anything that would make a reader allocate
// or work beyond what the stream's own size and limit allow: lengths
// outside the stream, more than maxStreamMessages messages, more rows
// than limit/rowSize, nodes or buffers beyond what maxColumns columns
// need, compressed buffers claiming more than limit bytes in total, and
// zstd frames with windows above maxWindow. It parses each message once.
func checkStream(stream []byte, limit, rowSize int64, maxColumns int) error {
	rest := stream
	var inflated, rows int64
	var scratch recordBatch
	for n := 0; ; n++ {
		m, r, ok, err := nextMessage(rest)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if n >= maxStreamMessages {
			return corruptf("more than %d messages", maxStreamMessages)
		}
		rest = r
		var rb recordBatch
		switch m.kind {
		case msgDictionaryBatch:
			data, ok := m.header.table(1)
			if !ok {
				return corruptf("dictionary batch without data")
			}
			if rb, err = parseRecordBatch(data, m.body, 1, 3, &scratch); err != nil {
				return err
			}
		case msgRecordBatch:
			if rb, err = parseRecordBatch(m.header, m.body, maxColumns, 3*maxColumns, &scratch); err != nil {
				return err
			}
			rows += rb.length
			if rows > limit/rowSize {
				return ErrTooLarge
			}
		default:
			return corruptf("unexpected message type %d", m.kind)
		}
		for _, nd := range rb.nodes {
			if nd.length != rb.length || nd.nulls != 0 {
				return corruptf("field node of %d rows (%d null) in a batch of %d", nd.length, nd.nulls, rb.length)
			}
		}
		if rb.length > limit {
			return ErrTooLarge
		}
		if rb.codec < 0 {
			continue
		}
		for _, br := range rb.buffers {
			if br.length == 0 {
				continue
			}
			if br.length < 8 {
				return corruptf("compressed buffer of %d bytes", br.length)
			}
			buf := m.body[br.offset : br.offset+br.length]
			size := int64(binary.LittleEndian.Uint64(buf))
			if size == -1 {
				continue // stored uncompressed
			}
			if size < 0 || size > limit-inflated {
				return ErrTooLarge
			}
			inflated += size
			if rb.codec == codecZstd {
				if err := checkZstdFrame(buf[8:], max(size, 1<<10), maxZstdWindow); err != nil {
					return err
				}
			}
		}
	}
}

// maxZstdWindow is the largest zstd window accepted inside an Arrow
// stream (Arrow Go's writer uses 8 MiB).
const maxZstdWindow = 8 << 20

// checkZstdFrame checks the header of the zstd frame at the start of b: the
// magic number, a window of at most maxWindow, and a declared content size,
// when present, of at most maxContent.
func checkZstdFrame(b []byte, maxContent, maxWindow int64) error {
	if len(b) < 5 || binary.LittleEndian.Uint32(b) != 0xFD2FB528 {
		return corruptf("not a zstd frame")
	}
	fhd := b[4]
	single := fhd&0x20 != 0
	fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcsSize == 0 && single {
		fcsSize = 1
	}
	p := 5
	window := int64(-1)
	if !single {
		if len(b) < p+1 {
			return corruptf("truncated zstd frame header")
		}
		wd := b[p]
		p++
		base := int64(1) << (10 + wd>>3)
		window = base + base/8*int64(wd&7)
	}
	p += [4]int{0, 1, 2, 4}[fhd&3] // dictionary ID
	if len(b) < p+fcsSize {
		return corruptf("truncated zstd frame header")
	}
	fcs := int64(-1)
	switch fcsSize {
	case 1:
		fcs = int64(b[p])
	case 2:
		fcs = int64(binary.LittleEndian.Uint16(b[p:])) + 256
	case 4:
		fcs = int64(binary.LittleEndian.Uint32(b[p:]))
	case 8:
		fcs = int64(binary.LittleEndian.Uint64(b[p:]))
	}
	if single {
		window = fcs
	}
	if fcs > maxContent || fcs < -1 {
		return ErrTooLarge
	}
	if window > maxWindow || window < -1 {
		return ErrTooLarge
	}
	return nil
}
