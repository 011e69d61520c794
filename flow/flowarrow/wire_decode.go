package flowarrow

import (
	"encoding/binary"
	"unsafe"

	"github.com/ccflow/ccflow/flow"
)

// wireDecoder reads wire streams (WireVersion 2) straight into flows: it
// checks every length and index against the bytes present, never trusts
// a count before it has seen the bytes it implies, and allocates only the
// flows and the strings of dictionaries it has not seen before. It is not
// safe for concurrent use (Decoder pools them).
type wireDecoder struct {
	raw []byte // decompressed stream

	addrs [wireColumns][]byte   // addr dictionaries by column: 16 bytes a value
	strs  [wireColumns][]string // string dictionaries by column
	enums [wireColumns][]uint8  // enum dictionaries by column: index -> enum value
	seen  [wireColumns]bool
	rb    recordBatch // scratch for parsed record batches

	// intern keeps one copy of each dictionary string across messages, so
	// steady-state decoding allocates no strings. Bounded: cleared when
	// it holds maxInterned strings.
	intern map[string]string
}

const maxInterned = 1 << 16

// dictColumn maps dictionary IDs to wire columns.
var wireDictColumn = func() []int {
	var out []int
	for c := range wireCols {
		if wireCols[c].kind != wkPrim {
			out = append(out, c)
		}
	}
	return out
}()

func newWireDecoder() *wireDecoder {
	return &wireDecoder{intern: map[string]string{}}
}

// decode appends the flows of the wire stream rest (what follows the
// schema message of variant t) to dst. rows bounds the flows it may
// append.
func (d *wireDecoder) decode(dst []flow.Pseudo, t *wireTemplate, base int64, rest []byte, maxRows int64) ([]flow.Pseudo, error) {
	for c := range d.seen {
		d.seen[c] = false
	}
	start := len(dst)
	rows := int64(0)
	for n := 0; ; n++ {
		if len(rest) == 0 {
			return dst[:start], corruptf("truncated stream: no end-of-stream marker")
		}
		m, r, ok, err := nextMessage(rest)
		if err != nil {
			return dst[:start], err
		}
		if !ok {
			if len(r) != 0 {
				return dst[:start], corruptf("%d bytes after the end-of-stream marker", len(r))
			}
			return dst, nil
		}
		if n >= maxStreamMessages {
			return dst[:start], corruptf("more than %d messages", maxStreamMessages)
		}
		if len(m.meta)%8 != 0 || len(m.body)%8 != 0 {
			return dst[:start], corruptf("unaligned message")
		}
		rest = r
		switch m.kind {
		case msgDictionaryBatch:
			if err := d.dictionary(m); err != nil {
				return dst[:start], err
			}
		case msgRecordBatch:
			rb, err := parseRecordBatch(m.header, m.body, wireColumns, 2*wireColumns, &d.rb)
			if err != nil {
				return dst[:start], err
			}
			rows += rb.length
			if rows > maxRows {
				return dst[:start], ErrTooLarge
			}
			if dst, err = d.records(dst, t, base, rb, m.body); err != nil {
				return dst[:start], err
			}
		default:
			return dst[:start], corruptf("unexpected message type %d", m.kind)
		}
	}
}

// dictionary reads a DictionaryBatch message.
func (d *wireDecoder) dictionary(m ipcMessage) error {
	id, ok1 := m.header.int64(0, 0)
	data, ok2 := m.header.table(1)
	delta, ok3 := m.header.uint8(2, 0)
	if !ok1 || !ok2 || !ok3 || delta != 0 || id < 0 || id >= int64(len(wireDictColumn)) {
		return corruptf("bad dictionary batch")
	}
	c := wireDictColumn[id]
	rb, err := parseRecordBatch(data, m.body, 1, 3, &d.rb)
	if err != nil {
		return err
	}
	k := rb.length
	if rb.codec >= 0 || len(rb.nodes) != 1 || rb.nodes[0] != (fieldNode{k, 0}) || k > wireMaxRows {
		return corruptf("bad dictionary %d", id)
	}
	switch wireCols[c].kind {
	case wkAddr:
		if len(rb.buffers) != 2 || rb.buffers[1].length < 16*k {
			return corruptf("bad dictionary %d", id)
		}
		d.addrs[c] = m.body[rb.buffers[1].offset:][:16*k]
	case wkStr, wkEnum:
		vals, err := d.strings(m.body, rb, d.strs[c][:0])
		if err != nil {
			return corruptf("dictionary %d: %v", id, err)
		}
		d.strs[c] = vals
		if wireCols[c].kind == wkStr {
			break
		}
		if k > 128 {
			return corruptf("bad dictionary %d", id)
		}
		names := enumNamesOf(c)
		e := d.enums[c][:0]
		for _, v := range vals {
			code := uint8(0)
			for j, name := range names {
				if v == name {
					code = uint8(j)
				}
			}
			e = append(e, code)
		}
		d.enums[c] = e
	}
	d.seen[c] = true
	return nil
}

// strings reads the utf8 values of a dictionary batch, interned.
func (d *wireDecoder) strings(body []byte, rb recordBatch, out []string) ([]string, error) {
	k := int(rb.length)
	if len(rb.buffers) != 3 || rb.buffers[1].length < 4*int64(k+1) {
		return nil, corruptf("bad string buffers")
	}
	offs := body[rb.buffers[1].offset:][:4*(k+1)]
	data := body[rb.buffers[2].offset:][:rb.buffers[2].length]
	prev := binary.LittleEndian.Uint32(offs)
	for i := 1; i <= k; i++ {
		o := binary.LittleEndian.Uint32(offs[4*i:])
		if o < prev || int64(o) > int64(len(data)) {
			return nil, corruptf("bad string offsets")
		}
		out = append(out, d.internBytes(data[prev:o]))
		prev = o
	}
	return out, nil
}

func (d *wireDecoder) internBytes(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.intern[string(b)]; ok {
		return s
	}
	if len(d.intern) >= maxInterned {
		clear(d.intern)
	}
	s := string(b)
	d.intern[s] = s
	return s
}

// records appends the rows of one record batch.
func (d *wireDecoder) records(dst []flow.Pseudo, t *wireTemplate, base int64, rb recordBatch, body []byte) ([]flow.Pseudo, error) {
	m := int(rb.length)
	if rb.codec >= 0 || len(rb.nodes) != wireColumns || len(rb.buffers) != 2*wireColumns || m > wireMaxRows {
		return dst, corruptf("bad record batch")
	}
	var cols [wireColumns][]byte
	for c := range wireCols {
		if rb.nodes[c] != (fieldNode{int64(m), 0}) {
			return dst, corruptf("column %s: bad field node", wireCols[c].name)
		}
		w := wireCols[c].width
		if t.wide {
			w = wireCols[c].wideWidth
		}
		b := rb.buffers[2*c+1]
		if b.length < int64(m*w) {
			return dst, corruptf("column %s: buffer too short for %d rows", wireCols[c].name, m)
		}
		cols[c] = body[b.offset:][:m*w]
		if wireCols[c].kind != wkPrim && m > 0 {
			if !d.seen[c] {
				return dst, corruptf("column %s: no dictionary", wireCols[c].name)
			}
			k := len(d.strs[c])
			switch wireCols[c].kind {
			case wkAddr:
				k = len(d.addrs[c]) / 16
			case wkEnum:
				k = len(d.enums[c])
			}
			if !indicesBelow(cols[c], w, k) {
				return dst, corruptf("column %s: dictionary index out of range", wireCols[c].name)
			}
		}
	}
	start := len(dst)
	dst = append(dst, make([]flow.Pseudo, m)...)
	out := dst[start:]
	u16 := func(c, i int) uint16 { return binary.LittleEndian.Uint16(cols[c][2*i:]) }
	u32 := func(c, i int) uint32 { return binary.LittleEndian.Uint32(cols[c][4*i:]) }
	u64 := func(c, i int) uint64 { return binary.LittleEndian.Uint64(cols[c][8*i:]) }
	ix := func(c, i int) int { return int(int16(binary.LittleEndian.Uint16(cols[c][2*i:]))) }
	addr := func(c, i int) (a [16]byte) {
		j := 16 * ix(c, i)
		copy(a[:], d.addrs[c][j:j+16])
		return a
	}
	epro, ekind, edir := d.enums[wExportProto], d.enums[wKind], d.enums[wDirection]
	org, cc, prov, intel := d.strs[wASOrg], d.strs[wCountry], d.strs[wProvider], d.strs[wIntel]
	expName, inName, outName := d.strs[wExporterName], d.strs[wInIfName], d.strs[wOutIfName]
	for i := range out {
		p := &out[i]
		if t.wide {
			p.TimeStartMs = base + int64(u64(wTimeStart, i))
			p.TimeEndMs = p.TimeStartMs + int64(u64(wDuration, i))
			p.Bytes, p.Packets = u64(wBytes, i), u64(wPackets, i)
		} else {
			p.TimeStartMs = base + int64(u32(wTimeStart, i))
			p.TimeEndMs = p.TimeStartMs + int64(int32(u32(wDuration, i)))
			p.Bytes, p.Packets = uint64(u32(wBytes, i)), uint64(u32(wPackets, i))
		}
		p.Protocol = flow.Protocol(epro[cols[wExportProto][i]])
		p.Exporter = addr(wExporter, i)
		p.ObsDomain, p.InIf, p.OutIf = u32(wObsDomain, i), u32(wInIf, i), u32(wOutIf, i)
		p.Kind = flow.Kind(ekind[cols[wKind][i]])
		p.Direction = flow.Dir(edir[cols[wDirection][i]])
		p.Epoch = u32(wEpoch, i)
		p.Sub = addr(wSub, i)
		p.SubPort = u16(wSubPort, i)
		p.Peer = addr(wPeer, i)
		p.PeerPort = u16(wPeerPort, i)
		p.Remote = addr(wRemote, i)
		p.RemotePort = u16(wRemotePort, i)
		p.TransitSrc = addr(wTransitSrc, i)
		p.TransitSrcPort = u16(wTransitSrcPort, i)
		p.Proto, p.TCPFlags = cols[wProto][i], cols[wTCPFlags][i]
		p.SamplingRate, p.RemoteASN = u32(wSamplingRate, i), u32(wRemoteASN, i)
		p.RemoteASOrg, p.RemoteCountry = org[ix(wASOrg, i)], cc[ix(wCountry, i)]
		p.Provider, p.Intel = prov[ix(wProvider, i)], intel[ix(wIntel, i)]
		p.ExporterName, p.InIfName, p.OutIfName = expName[ix(wExporterName, i)], inName[ix(wInIfName, i)], outName[ix(wOutIfName, i)]
	}
	return dst, nil
}

// indicesBelow reports whether every index of the int8 (w=1) or int16
// (w=2) column b is in [0, k).
func indicesBelow(b []byte, w, k int) bool {
	if w == 1 {
		for _, v := range b {
			if int(int8(v)) < 0 || int(int8(v)) >= k {
				return false
			}
		}
		return true
	}
	for i := 0; i+1 < len(b); i += 2 {
		v := int(int16(binary.LittleEndian.Uint16(b[i:])))
		if v < 0 || v >= k {
			return false
		}
	}
	return true
}

// rowSize is the Go memory one decoded flow takes.
const rowSize = int64(unsafe.Sizeof(flow.Pseudo{}))
