package flowarrow

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/bits"
	"unsafe"

	"github.com/ccflow/ccflow/flow"
	flatbuffers "github.com/google/flatbuffers/go"
)

// wireEncoder writes wire streams (WireVersion 2) without Arrow's writer:
// it knows the schema, so it reads each flow once into a packed row
// (building the dictionaries), sorts packed keys, and writes every column
// of the gathered rows straight into the stream. It is not safe for
// concurrent use; its memory is reused between streams.
type wireEncoder struct {
	fb     *flatbuffers.Builder
	stream []byte

	keys, tmp []uint64

	one   rowSet    // rows of encode
	parts []*rowSet // rows of encodeParts, by partition

	nodes []fieldNode
	bufs  []bufferRef
}

// rowSet is the rows of one record batch being built, packed (the flows
// are read once: they are large and rarely in cache; the sorted order is
// gathered from this smaller array), with their dictionaries.
type rowSet struct {
	rows []wireRow
	addr [5]addrDict // exporter, sub, peer, remote_addr, transit_src
	str  [7]strDict  // as_org, country, provider, intel, exporter_name, in_if_name, out_if_name
	// lo and hi bound time_start; wide is set when a duration, byte or
	// packet count needs 64 bits.
	lo, hi int64
	wide   bool
}

// Indexes into wireEncoder.addr and wireRow.idx (string dictionaries
// follow at len(addr)+i).
const (
	adExporter = iota
	adSub
	adPeer
	adRemote
	adTransit
)

func newWireEncoder() *wireEncoder {
	e := &wireEncoder{fb: flatbuffers.NewBuilder(4096)}
	e.one.init()
	return e
}

func (rs *rowSet) init() {
	for i := range rs.str {
		rs.str[i].m = map[string]int32{}
	}
	rs.reset()
}

func (rs *rowSet) reset() {
	rs.rows = rs.rows[:0]
	for i := range rs.addr {
		rs.addr[i].reset()
	}
	for i := range rs.str {
		rs.str[i].reset()
	}
	rs.lo, rs.hi, rs.wide = math.MaxInt64, math.MinInt64, false
}

// add appends the row of f.
func (rs *rowSet) add(f *flow.Pseudo) {
	rs.rows = append(rs.rows, wireRow{})
	r := &rs.rows[len(rs.rows)-1]
	r.ts = uint64(f.TimeStartMs)
	r.dur = f.TimeEndMs - f.TimeStartMs
	r.bytes, r.packets = f.Bytes, f.Packets
	rs.lo, rs.hi = min(rs.lo, f.TimeStartMs), max(rs.hi, f.TimeStartMs)
	if r.dur != int64(int32(r.dur)) || f.Bytes > math.MaxUint32 || f.Packets > math.MaxUint32 {
		rs.wide = true
	}
	r.u32 = [6]uint32{f.ObsDomain, f.InIf, f.OutIf, f.Epoch, f.SamplingRate, f.RemoteASN}
	r.u16 = [4]uint16{f.SubPort, f.PeerPort, f.RemotePort, f.TransitSrcPort}
	r.u8 = [5]uint8{f.Proto, f.TCPFlags, enumByte(uint8(f.Protocol), len(protocolDict)),
		enumByte(uint8(f.Kind), len(kindDict)), enumByte(uint8(f.Direction), len(directionDict))}
	a, st := &rs.addr, &rs.str
	r.idx = [12]int16{
		int16(a[adExporter].index((*[16]byte)(&f.Exporter))),
		int16(a[adSub].index((*[16]byte)(&f.Sub))),
		int16(a[adPeer].index((*[16]byte)(&f.Peer))),
		int16(a[adRemote].index((*[16]byte)(&f.Remote))),
		int16(a[adTransit].index((*[16]byte)(&f.TransitSrc))),
		int16(st[0].index(f.RemoteASOrg)),
		int16(st[1].index(f.RemoteCountry)),
		int16(st[2].index(f.Provider)),
		int16(st[3].index(f.Intel)),
		int16(st[4].index(f.ExporterName)),
		int16(st[5].index(f.InIfName)),
		int16(st[6].index(f.OutIfName)),
	}
}

// startStream starts e.stream with the schema message of the variant,
// batch ID and time base.
func (e *wireEncoder) startStream(id flow.BatchID, base int64, wide bool) {
	t := &wireTemplates()[0]
	if wide {
		t = &wireTemplates()[1]
	}
	s := append(e.stream[:0], t.msg...)
	hex.Encode(s[t.idAt:t.idAt+32], id[:])
	putTimeBase(s[t.timeAt:t.timeAt+20], base)
	e.stream = s
}

func (e *wireEncoder) endStream() []byte {
	e.stream = append(e.stream, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0)
	return e.stream
}

// encodeParts encodes flows split by partition (partOf, in [0, nparts))
// in one pass over flows, into streams of at most maxRows rows (at most
// wireMaxRows), calling emit for each (the stream is valid during the
// call) after id has named it. Partitions whose rows fill up are emitted
// during the pass, the others in partition order at the end.
func (e *wireEncoder) encodeParts(flows []flow.Pseudo, nparts int, partOf func(*flow.Pseudo) int, maxRows int,
	id func() flow.BatchID, emit func(part, n int, stream []byte) error) error {
	maxRows = min(max(maxRows, 1), wireMaxRows)
	for len(e.parts) < nparts {
		rs := &rowSet{}
		rs.init()
		e.parts = append(e.parts, rs)
	}
	finish := func(p int) error {
		rs := e.parts[p]
		wide := rs.wide || uint64(rs.hi-rs.lo) > math.MaxUint32
		e.startStream(id(), rs.lo, wide)
		e.batch(rs, rs.lo, wide)
		err := emit(p, len(rs.rows), e.endStream())
		rs.reset()
		return err
	}
	for i := range flows {
		f := &flows[i]
		p := partOf(f)
		if p < 0 || p >= nparts {
			return fmt.Errorf("flow %d: partition %d not in [0, %d)", i, p, nparts)
		}
		rs := e.parts[p]
		rs.add(f)
		if len(rs.rows) == maxRows {
			if err := finish(p); err != nil {
				return err
			}
		}
	}
	for p := range nparts {
		if len(e.parts[p].rows) > 0 {
			if err := finish(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// flowAt returns the j-th flow of flows, or of flows[sel[...]] when sel is
// not nil.
func flowAt(flows []flow.Pseudo, sel []int32, j int) *flow.Pseudo {
	if sel != nil {
		return &flows[sel[j]]
	}
	return &flows[j]
}

// encode returns the uncompressed wire stream of the n flows (n =
// len(sel), or len(flows) when sel is nil). The stream is valid until the
// next call.
func (e *wireEncoder) encode(id flow.BatchID, flows []flow.Pseudo, sel []int32) []byte {
	n := len(flows)
	if sel != nil {
		n = len(sel)
	}
	// Time base and variant.
	base, wide := int64(0), false
	if n > 0 {
		lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
		for j := 0; j < n; j++ {
			f := flowAt(flows, sel, j)
			lo, hi = min(lo, f.TimeStartMs), max(hi, f.TimeStartMs)
			d := f.TimeEndMs - f.TimeStartMs
			if d != int64(int32(d)) || f.Bytes > math.MaxUint32 || f.Packets > math.MaxUint32 {
				wide = true
			}
		}
		base = lo
		if uint64(hi-lo) > math.MaxUint32 {
			wide = true
		}
	}
	e.startStream(id, base, wide)
	rs := &e.one
	for lo := 0; lo < n || lo == 0; lo += wireMaxRows {
		rs.reset()
		for j := lo; j < min(n, lo+wireMaxRows); j++ {
			rs.add(flowAt(flows, sel, j))
		}
		e.batch(rs, base, wide)
		if n == 0 {
			break
		}
	}
	return e.endStream()
}

// batch appends the dictionaries and the record batch of the rows of rs.
func (e *wireEncoder) batch(rs *rowSet, base int64, wide bool) {
	rows := rs.rows
	m := len(rows)
	e.keys = grow(e.keys, m)
	e.tmp = grow(e.tmp, m)
	// Sort keys (remote, remote port, subscriber, input row). The row is
	// in the low bits, so the sort is stable without sorting them.
	sub, remote := &rs.addr[adSub], &rs.addr[adRemote]
	rowBits := bits.Len(uint(max(m-1, 1)))
	subBits := bits.Len(uint(max(len(sub.vals)-1, 1)))
	remBits := bits.Len(uint(max(len(remote.vals)-1, 1)))
	keys := e.keys[:m]
	for j := range rows {
		r := &rows[j]
		keys[j] = (uint64(r.idx[adRemote])<<(16+subBits)|uint64(r.u16[u16RemotePort])<<subBits|uint64(r.idx[adSub]))<<rowBits | uint64(j)
	}
	radixSort(keys, e.tmp[:m], rowBits, rowBits+subBits+16+remBits)

	// Dictionaries, in dictionary ID order (column order).
	for c := range wireCols {
		col := &wireCols[c]
		switch col.kind {
		case wkEnum:
			e.appendStringDict(col.dictID, enumNamesOf(c))
		case wkAddr:
			e.appendAddrDict(col.dictID, rs.addr[addrDictOf(c)].vals)
		case wkStr:
			e.appendStringDict(col.dictID, rs.str[strDictOf(c)].vals)
		}
	}

	// The record batch: metadata, then the body.
	e.nodes, e.bufs = e.nodes[:0], e.bufs[:0]
	var at [wireColumns]int
	off := int64(0)
	for c := range wireCols {
		w := wireCols[c].width
		if wide {
			w = wireCols[c].wideWidth
		}
		size := int64(m * w)
		e.nodes = append(e.nodes, fieldNode{int64(m), 0})
		e.bufs = append(e.bufs, bufferRef{off, 0}, bufferRef{off, size})
		at[c] = int(off)
		off += pad8(size)
	}
	e.appendMessage(msgRecordBatch, e.fbRecordBatch(int64(m)), off)
	start := len(e.stream)
	e.stream = append(e.stream, make([]byte, off)...)
	body := e.stream[start:]
	// Pass 2, sorted order: gather each row and write its columns.
	rowMask := uint64(1)<<rowBits - 1
	le := binary.LittleEndian
	for i, k := range keys {
		r := &rows[k&rowMask]
		if wide {
			le.PutUint64(body[at[wTimeStart]+8*i:], r.ts-uint64(base))
			le.PutUint64(body[at[wDuration]+8*i:], uint64(r.dur))
			le.PutUint64(body[at[wBytes]+8*i:], r.bytes)
			le.PutUint64(body[at[wPackets]+8*i:], r.packets)
		} else {
			le.PutUint32(body[at[wTimeStart]+4*i:], uint32(r.ts-uint64(base)))
			le.PutUint32(body[at[wDuration]+4*i:], uint32(r.dur))
			le.PutUint32(body[at[wBytes]+4*i:], uint32(r.bytes))
			le.PutUint32(body[at[wPackets]+4*i:], uint32(r.packets))
		}
		le.PutUint32(body[at[wObsDomain]+4*i:], r.u32[0])
		le.PutUint32(body[at[wInIf]+4*i:], r.u32[1])
		le.PutUint32(body[at[wOutIf]+4*i:], r.u32[2])
		le.PutUint32(body[at[wEpoch]+4*i:], r.u32[3])
		le.PutUint32(body[at[wSamplingRate]+4*i:], r.u32[4])
		le.PutUint32(body[at[wRemoteASN]+4*i:], r.u32[5])
		le.PutUint16(body[at[wSubPort]+2*i:], r.u16[0])
		le.PutUint16(body[at[wPeerPort]+2*i:], r.u16[1])
		le.PutUint16(body[at[wRemotePort]+2*i:], r.u16[2])
		le.PutUint16(body[at[wTransitSrcPort]+2*i:], r.u16[3])
		body[at[wProto]+i] = r.u8[0]
		body[at[wTCPFlags]+i] = r.u8[1]
		body[at[wExportProto]+i] = r.u8[2]
		body[at[wKind]+i] = r.u8[3]
		body[at[wDirection]+i] = r.u8[4]
		le.PutUint16(body[at[wExporter]+2*i:], uint16(r.idx[adExporter]))
		le.PutUint16(body[at[wSub]+2*i:], uint16(r.idx[adSub]))
		le.PutUint16(body[at[wPeer]+2*i:], uint16(r.idx[adPeer]))
		le.PutUint16(body[at[wRemote]+2*i:], uint16(r.idx[adRemote]))
		le.PutUint16(body[at[wTransitSrc]+2*i:], uint16(r.idx[adTransit]))
		for d := range 7 {
			le.PutUint16(body[at[wASOrg+d]+2*i:], uint16(r.idx[len(rs.addr)+d]))
		}
	}
}

// wireRow is one input row's columns: ts is time_start itself (the base
// is subtracted when written), idx the dictionary indices (the five
// address dictionaries, then the seven string dictionaries).
type wireRow struct {
	ts, bytes, packets uint64
	dur                int64
	u32                [6]uint32 // obs_domain, in_if, out_if, epoch, sampling_rate, remote_asn
	u16                [4]uint16 // sub_port, peer_port, remote_port, transit_src_port
	idx                [12]int16
	u8                 [5]uint8 // proto, tcp_flags, export_proto, kind, direction
}

// u16RemotePort indexes wireRow.u16.
const u16RemotePort = 2

// addrDictOf returns the addrDict of wire column c, or -1.
func addrDictOf(c int) int {
	switch c {
	case wExporter:
		return adExporter
	case wSub:
		return adSub
	case wPeer:
		return adPeer
	case wRemote:
		return adRemote
	case wTransitSrc:
		return adTransit
	}
	return -1
}

// strDictOf returns the strDict of wire column c, or -1.
func strDictOf(c int) int {
	if c >= wASOrg && c <= wOutIfName {
		return c - wASOrg
	}
	return -1
}

func enumByte(v uint8, n int) uint8 {
	if int(v) >= n {
		return 0 // "unknown", as Builder does
	}
	return v
}

func pad8(n int64) int64 { return (n + 7) &^ 7 }

// grow returns s with length at least n (contents unspecified).
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/4)
	}
	return s[:n]
}

// appendMessage appends an encapsulated message with the flatbuffer
// header just built, declaring a body of bodyLen bytes (appended by the
// caller).
func (e *wireEncoder) appendMessage(kind byte, header flatbuffers.UOffsetT, bodyLen int64) {
	b := e.fb
	b.StartObject(5)
	b.PrependInt64Slot(3, bodyLen, 0)
	b.PrependUOffsetTSlot(2, header, 0)
	b.PrependInt16Slot(0, 4, 0) // MetadataVersion V5
	b.PrependByteSlot(1, kind, 0)
	b.Finish(b.EndObject())
	meta := b.FinishedBytes()
	padded := pad8(int64(len(meta)))
	s := binary.LittleEndian.AppendUint32(e.stream, ipcContinuation)
	s = binary.LittleEndian.AppendUint32(s, uint32(padded))
	s = append(s, meta...)
	s = append(s, make([]byte, padded-int64(len(meta)))...)
	e.stream = s
	b.Reset()
}

// fbRecordBatch builds a RecordBatch table of e.nodes and e.bufs.
func (e *wireEncoder) fbRecordBatch(length int64) flatbuffers.UOffsetT {
	b := e.fb
	b.StartVector(16, len(e.nodes), 8)
	for i := len(e.nodes) - 1; i >= 0; i-- {
		b.Prep(8, 16)
		b.PrependInt64(e.nodes[i].nulls)
		b.PrependInt64(e.nodes[i].length)
	}
	nodes := b.EndVector(len(e.nodes))
	b.StartVector(16, len(e.bufs), 8)
	for i := len(e.bufs) - 1; i >= 0; i-- {
		b.Prep(8, 16)
		b.PrependInt64(e.bufs[i].length)
		b.PrependInt64(e.bufs[i].offset)
	}
	bufs := b.EndVector(len(e.bufs))
	b.StartObject(5)
	b.PrependInt64Slot(0, length, 0)
	b.PrependUOffsetTSlot(1, nodes, 0)
	b.PrependUOffsetTSlot(2, bufs, 0)
	return b.EndObject()
}

// appendDictMessage appends a DictionaryBatch message for dictionary id
// of k values whose buffers e.bufs describe; the caller appends the body.
func (e *wireEncoder) appendDictMessage(id int64, k int, bodyLen int64) {
	e.nodes = append(e.nodes[:0], fieldNode{int64(k), 0})
	rb := e.fbRecordBatch(int64(k))
	b := e.fb
	b.StartObject(3)
	b.PrependInt64Slot(0, id, 0)
	b.PrependUOffsetTSlot(1, rb, 0)
	e.appendMessage(msgDictionaryBatch, b.EndObject(), bodyLen)
}

func (e *wireEncoder) appendAddrDict(id int64, vals [][16]byte) {
	size := int64(16 * len(vals))
	e.bufs = append(e.bufs[:0], bufferRef{0, 0}, bufferRef{0, size})
	e.appendDictMessage(id, len(vals), pad8(size))
	e.stream = append(e.stream, sliceBytes(vals)...)
	e.stream = append(e.stream, make([]byte, pad8(size)-size)...)
}

func (e *wireEncoder) appendStringDict(id int64, vals []string) {
	offSize := int64(4 * (len(vals) + 1))
	data := int64(0)
	for _, v := range vals {
		data += int64(len(v))
	}
	e.bufs = append(e.bufs[:0], bufferRef{0, 0}, bufferRef{0, offSize}, bufferRef{pad8(offSize), data})
	e.appendDictMessage(id, len(vals), pad8(offSize)+pad8(data))
	s := e.stream
	o := uint32(0)
	s = binary.LittleEndian.AppendUint32(s, 0)
	for _, v := range vals {
		o += uint32(len(v))
		s = binary.LittleEndian.AppendUint32(s, o)
	}
	s = append(s, make([]byte, pad8(offSize)-offSize)...)
	for _, v := range vals {
		s = append(s, v...)
	}
	e.stream = append(s, make([]byte, pad8(data)-data)...)
}

// radixSort sorts keys by bits [lo, hi) (LSD, stable), using tmp.
func radixSort(keys, tmp []uint64, lo, hi int) {
	if len(keys) < 2 {
		return
	}
	const digit = 11
	var count [1 << digit]int32
	src, dst := keys, tmp
	for shift := lo; shift < hi; shift += digit {
		clear(count[:])
		for _, k := range src {
			count[(k>>shift)&(1<<digit-1)]++
		}
		if int(count[(src[0]>>shift)&(1<<digit-1)]) == len(src) {
			continue // one value: nothing moves
		}
		sum := int32(0)
		for i, c := range count {
			count[i] = sum
			sum += c
		}
		for _, k := range src {
			d := (k >> shift) & (1<<digit - 1)
			dst[count[d]] = k
			count[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

// addrDict dictionary-encodes 16-byte values with an open-addressing hash
// table that holds the keys (one cache line a probe) and grows with the
// values, so a column with few values costs little to reset.
type addrDict struct {
	slots   []addrSlot
	vals    [][16]byte
	last    [16]byte
	lastIdx int32
}

type addrSlot struct {
	key [16]byte
	idx int32 // index + 1; 0 = empty
}

func (d *addrDict) reset() {
	if want := max(64, 1<<bits.Len(uint(4*len(d.vals)))); len(d.slots) == 0 || len(d.slots) > 4*want {
		// Size for the last batch: a batch after a much larger one
		// clears little.
		d.slots = make([]addrSlot, want)
	} else {
		clear(d.slots)
	}
	d.vals = d.vals[:0]
	d.lastIdx = -1
}

func hash16(k *[16]byte) uint64 {
	lo := binary.LittleEndian.Uint64(k[:8])
	hi := binary.LittleEndian.Uint64(k[8:])
	return ((lo * 0x9E3779B97F4A7C15) ^ hi) * 0xC2B2AE3D27D4EB4F
}

func (d *addrDict) index(k *[16]byte) int32 {
	if d.lastIdx >= 0 && *k == d.last {
		return d.lastIdx
	}
	mask := uint64(len(d.slots) - 1)
	i := (hash16(k) >> 32) & mask
	for {
		s := &d.slots[i]
		if s.idx == 0 {
			break
		}
		if s.key == *k {
			d.last, d.lastIdx = *k, s.idx-1
			return s.idx - 1
		}
		i = (i + 1) & mask
	}
	idx := int32(len(d.vals))
	d.vals = append(d.vals, *k)
	d.slots[i] = addrSlot{*k, idx + 1}
	if 2*len(d.vals) > len(d.slots) {
		d.rehash()
	}
	d.last, d.lastIdx = *k, idx
	return idx
}

func (d *addrDict) rehash() {
	d.slots = make([]addrSlot, 2*len(d.slots))
	mask := uint64(len(d.slots) - 1)
	for v := range d.vals {
		i := (hash16(&d.vals[v]) >> 32) & mask
		for d.slots[i].idx != 0 {
			i = (i + 1) & mask
		}
		d.slots[i] = addrSlot{d.vals[v], int32(v) + 1}
	}
}

// strDict dictionary-encodes strings. Strings of flows are interned by
// the enricher (equal values share their bytes), so a small cache keyed by
// the string's address answers most lookups without hashing the string.
type strDict struct {
	cache [256]strSlot
	gen   uint32
	m     map[string]int32
	vals  []string
	empty int32 // index of "" + 1, 0 when not seen
}

type strSlot struct {
	p   *byte
	n   int
	idx int32
	gen uint32
}

func (d *strDict) reset() {
	d.gen++
	if d.gen == 0 {
		d.cache = [256]strSlot{}
		d.gen = 1
	}
	clear(d.m)
	d.vals = d.vals[:0]
	d.empty = 0
}

func (d *strDict) index(s string) int32 {
	if len(s) == 0 {
		if d.empty == 0 {
			d.vals = append(d.vals, "")
			d.empty = int32(len(d.vals))
		}
		return d.empty - 1
	}
	p := unsafe.StringData(s)
	c := &d.cache[(uintptr(unsafe.Pointer(p))>>3^uintptr(len(s)))&255]
	if c.gen == d.gen && c.p == p && c.n == len(s) {
		return c.idx
	}
	i, ok := d.m[s]
	if !ok {
		i = int32(len(d.vals))
		d.vals = append(d.vals, s)
		d.m[s] = i
	}
	*c = strSlot{p, len(s), i, d.gen}
	return i
}
