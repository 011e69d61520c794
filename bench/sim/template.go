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
