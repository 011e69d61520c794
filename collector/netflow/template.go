package netflow

import "encoding/binary"

// varLen is the field length that marks an IPFIX variable-length field. Like
// goflow2, the decoder also honours it in NetFlow v9 templates (nProbe uses
// it there; a fixed 65535-byte field cannot fit a datagram anyway).
const varLen = 0xffff

// maxRecordLen is the longest record a set can hold (65535 minus the set
// header); a template describing longer records is absurd.
const maxRecordLen = 65531

// tkey identifies a template within a session.
type tkey struct {
	version uint16
	id      uint16
	domain  uint32
}

// dkey identifies an observation domain within a session.
type dkey struct {
	version uint16
	domain  uint32
}

// tfield is one field specifier of a template as received.
type tfield struct {
	typ        uint16
	length     uint16
	pen        uint32
	enterprise bool
}

// op is one compiled step of a template: decode length bytes (varLen: read
// the length prefix) at offset off (fixed layouts only) into field f.
type op struct {
	f      Field
	length uint16
	off    uint16
}

// template is a compiled (options) template.
type template struct {
	key     tkey
	options bool
	nScope  int
	fields  []tfield
	// ops: for fixed layouts only the decoded fields, with offsets; for
	// variable layouts every field in order.
	ops      []op
	fixedLen int // sum of the fixed field lengths
	minLen   int // fixedLen plus one length byte per variable field
	variable bool
	seen     int64 // last time (ms) the template was received
}

// compile builds a template from its field specifiers. NetFlow v9 options
// scope fields (system, interface, line card, ...) are not information
// elements and are skipped; IPFIX scope fields are decoded like any other.
func compile(key tkey, fields []tfield, nScope int, options bool) (*template, error) {
	t := &template{key: key, options: options, nScope: nScope, fields: append([]tfield(nil), fields...)}
	nVar := 0
	for _, f := range fields {
		if f.length == varLen {
			nVar++
			t.variable = true
		} else {
			t.fixedLen += int(f.length)
		}
	}
	if t.fixedLen == 0 && nVar == 0 {
		return nil, ErrZeroTemplate
	}
	t.minLen = t.fixedLen + nVar
	if t.minLen > maxRecordLen {
		return nil, ErrTemplate
	}
	off := 0
	for i, fs := range fields {
		f := fieldOf(fs.typ, fs.enterprise)
		if key.version == 9 && options && i < nScope {
			f = fieldSkip
		}
		if t.variable {
			if f == fieldSkip && fs.length != varLen && len(t.ops) > 0 {
				// Merge runs of skipped fixed fields into one step.
				if last := &t.ops[len(t.ops)-1]; last.f == fieldSkip && last.length != varLen && int(last.length)+int(fs.length) < varLen {
					last.length += fs.length
					continue
				}
			}
			t.ops = append(t.ops, op{f: f, length: fs.length})
			continue
		}
		if f != fieldSkip {
			t.ops = append(t.ops, op{f: f, length: fs.length, off: uint16(off)})
		}
		off += int(fs.length)
	}
	return t, nil
}

// same reports whether t was compiled from exactly these specifiers.
func (t *template) same(fields []tfield, nScope int, options bool) bool {
	if t.options != options || t.nScope != nScope || len(t.fields) != len(fields) {
		return false
	}
	for i := range fields {
		if t.fields[i] != fields[i] {
			return false
		}
	}
	return true
}

// decode appends the records of data set body to out, each starting as a
// copy of ctx. Trailing bytes shorter than a record are padding. A record
// whose variable-length fields run past the set is dropped with ErrRecord.
func (t *template) decode(body []byte, ctx *Record, out []Record) ([]Record, error) {
	if !t.variable {
		n := t.fixedLen
		for len(body) >= n {
			rec := body[:n:n]
			out = append(out, *ctx)
			r := &out[len(out)-1]
			for _, o := range t.ops {
				set(r, o.f, rec[o.off:int(o.off)+int(o.length)])
			}
			body = body[n:]
		}
		return out, nil
	}
	for len(body) >= t.minLen {
		out = append(out, *ctx)
		n, err := t.one(body, &out[len(out)-1])
		if err != nil {
			return out[:len(out)-1], err
		}
		body = body[n:]
	}
	return out, nil
}

// one decodes the record at the start of body (at least minLen bytes) into
// r and returns its length.
func (t *template) one(body []byte, r *Record) (int, error) {
	if !t.variable {
		rec := body[:t.fixedLen:t.fixedLen]
		for _, o := range t.ops {
			set(r, o.f, rec[o.off:int(o.off)+int(o.length)])
		}
		return t.fixedLen, nil
	}
	cur := 0
	for _, o := range t.ops {
		l := int(o.length)
		if o.length == varLen {
			if cur >= len(body) {
				return 0, ErrRecord
			}
			l = int(body[cur])
			cur++
			if l == 255 {
				if cur+2 > len(body) {
					return 0, ErrRecord
				}
				l = int(binary.BigEndian.Uint16(body[cur:]))
				cur += 2
			}
		}
		if cur+l > len(body) {
			return 0, ErrRecord
		}
		set(r, o.f, body[cur:cur+l])
		cur += l
	}
	return cur, nil
}
