package sim

import "encoding/binary"

// The set building shared by the NetFlow v9 and IPFIX encoders: both
// formats frame templates, options templates and data in sets (v9
// "flowsets") of a 2-byte ID and a 2-byte length, padded to four bytes.

// template is one NetFlow v9 or IPFIX template: its ID and its fields as
// (information element ID, length in bytes).
type template struct {
	id     uint16
	fields [][2]uint16
}

// appendSet appends a set with ID setID whose content body appends, padded
// to a multiple of four bytes, with its length filled in.
func appendSet(b []byte, setID uint16, body func([]byte) []byte) []byte {
	be := binary.BigEndian
	start := len(b)
	b = be.AppendUint16(b, setID)
	b = be.AppendUint16(b, 0)
	b = body(b)
	for (len(b)-start)%4 != 0 {
		b = append(b, 0)
	}
	be.PutUint16(b[start+2:], uint16(len(b)-start))
	return b
}

// appendTemplateSet appends a template set (setID 0 in NetFlow v9, 2 in
// IPFIX) holding ts.
func appendTemplateSet(b []byte, setID uint16, ts ...template) []byte {
	return appendSet(b, setID, func(b []byte) []byte {
		be := binary.BigEndian
		for _, t := range ts {
			b = be.AppendUint16(b, t.id)
			b = be.AppendUint16(b, uint16(len(t.fields)))
			for _, f := range t.fields {
				b = be.AppendUint16(b, f[0])
				b = be.AppendUint16(b, f[1])
			}
		}
		return b
	})
}

// appendSamplingData appends the options data set of options template tid
// that both formats use for sampling: a 4-byte scope value (the
// observation domain / source ID), samplingInterval (4 bytes, rate) and
// samplingAlgorithm (1 byte, 2 = random).
func appendSamplingData(b []byte, tid uint16, domain, rate uint32) []byte {
	return appendSet(b, tid, func(b []byte) []byte {
		b = binary.BigEndian.AppendUint32(b, domain)
		b = binary.BigEndian.AppendUint32(b, rate)
		return append(b, 2)
	})
}

// take runs r through the sampler after passes reported false: it returns
// the record to export (r itself when unsampled, else tmp holding r reduced
// to the selected packets), or nil when no packet of r was selected.
func (s *Sampler) take(r, tmp *Record) *Record {
	if s.rate > 1 {
		if s.Sample(r, tmp) == 0 {
			return nil
		}
		return tmp
	}
	s.pool += r.Packets
	return r
}

// templated is the state and the record loop shared by the NetFlow v9 and
// IPFIX encoders; each adds its header, templates and record layout.
type templated struct {
	cfg     EncoderConfig
	sampler *Sampler
	clock   templateClock
	seq     uint32
	tmpl    []byte // template set, and with sampling options template and data
	tmp     Record
	layout  dataLayout
}

// dataLayout is how a format lays out data records: the template IDs and
// record lengths for IPv4 and IPv6 flows, whether data sets are padded to
// four bytes, and put, which writes record s into p (len4 or len6 bytes).
type dataLayout struct {
	id4, id6   uint16
	len4, len6 int
	pad        bool
	put        func(p []byte, s *Record, v6 bool)
}

func newTemplated(cfg EncoderConfig) (templated, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return templated{}, err
	}
	return templated{
		cfg:     c,
		sampler: NewSampler(c.Sampling, c.Seed),
		clock:   templateClock{every: c.TemplateRefresh, interval: c.TemplateInterval.Milliseconds()},
	}, nil
}

// Pending always reports false: NetFlow v9 and IPFIX records never span
// datagrams.
func (e *templated) Pending() bool { return false }

// Sampler returns the encoder's packet sampler.
func (e *templated) Sampler() *Sampler { return e.sampler }

// appendRecords writes the records of recs that the sampler selects into
// b from off on, within the datagram size limit, as data sets of one
// template each (a new set whenever the address family changes). It
// returns the offset after the last set, how many records of recs it
// consumed and how many it encoded.
func (e *templated) appendRecords(b []byte, off int, recs []Record) (int, int, int) {
	be := binary.BigEndian
	l := &e.layout
	limit := e.cfg.MaxDatagram
	padMax := 0
	if l.pad {
		padMax = 3
	}
	setStart, setID := -1, uint16(0)
	flows, i := 0, 0
	for ; i < len(recs); i++ {
		r := &recs[i]
		if e.sampler.passes(r) {
			continue
		}
		v6 := r.Is6()
		id, size := l.id4, l.len4
		if v6 {
			id, size = l.id6, l.len6
		}
		need := size + padMax // the record and the worst-case padding of its set
		if setStart < 0 || setID != id {
			need += 4 + padMax // a new set header, and padding of the set it closes
		}
		if off+need > limit {
			break
		}
		s := e.sampler.take(r, &e.tmp)
		if s == nil {
			continue
		}
		if setStart < 0 || setID != id {
			off = closeSet(b, off, setStart, l.pad)
			setStart, setID = off, id
			be.PutUint16(b[off:], id)
			off += 4
		}
		l.put(b[off:off+size], s, v6)
		off += size
		flows++
		if e.cfg.Trace != nil {
			e.cfg.Trace(s)
		}
	}
	return closeSet(b, off, setStart, l.pad), i, flows
}

// closeSet pads the set that starts at setStart (if any) to four bytes when
// pad is set, writes its length and returns the new offset.
func closeSet(b []byte, off, setStart int, pad bool) int {
	if setStart < 0 {
		return off
	}
	for pad && (off-setStart)%4 != 0 {
		b[off] = 0
		off++
	}
	binary.BigEndian.PutUint16(b[setStart+2:], uint16(off-setStart))
	return off
}
