// Package netflow5 decodes NetFlow version 5 datagrams.
//
// Decode parses a datagram into a caller-owned Header and appends one Record
// per flow to a caller-owned slice: it allocates nothing once the slice has
// grown to the datagram's record count, never panics, and reads nothing
// beyond the datagram. Records are protocol-faithful (the NetFlow v5 layout);
// the collector maps them to flow.Record.
package netflow5

import "encoding/binary"

// Sizes of the NetFlow v5 header and record.
const (
	HeaderLen = 24
	RecordLen = 48
)

// Error is a decoding error. Its string form (without the package prefix)
// is the `reason` label of the collector's decode-error metric.
type Error string

// Decoding errors.
const (
	// ErrShort: the datagram is shorter than a NetFlow v5 header.
	ErrShort Error = "truncated"
	// ErrVersion: the version field is not 5.
	ErrVersion Error = "bad_version"
	// ErrCount: the header's record count does not fit the datagram; the
	// records that fit were decoded.
	ErrCount Error = "bad_count"
)

// Error implements error.
func (e Error) Error() string { return "netflow5: " + string(e) }

// Reason returns the metric label of e.
func (e Error) Reason() string { return string(e) }

// Header is the NetFlow v5 datagram header.
type Header struct {
	Version          uint16
	Count            uint16
	SysUptime        uint32 // milliseconds since the exporter booted
	UnixSecs         uint32
	UnixNsecs        uint32
	FlowSequence     uint32
	EngineType       uint8
	EngineID         uint8
	SamplingInterval uint16 // top 2 bits: mode; low 14 bits: 1:N interval
}

// Record is one NetFlow v5 flow record.
type Record struct {
	SrcAddr  [4]byte
	DstAddr  [4]byte
	NextHop  [4]byte
	Input    uint16
	Output   uint16
	Packets  uint32
	Octets   uint32
	First    uint32 // SysUptime at the first packet, milliseconds
	Last     uint32 // SysUptime at the last packet, milliseconds
	SrcPort  uint16
	DstPort  uint16
	TCPFlags uint8
	Proto    uint8
	Tos      uint8
	SrcAS    uint16
	DstAS    uint16
	SrcMask  uint8
	DstMask  uint8
}

// Decode decodes datagram b into h and appends its records to out. When the
// header's count promises more records than b holds, the records that fit
// are appended and ErrCount is returned. Bytes after the last record are
// ignored.
func Decode(b []byte, h *Header, out []Record) ([]Record, error) {
	if len(b) < HeaderLen {
		return out, ErrShort
	}
	*h = Header{
		Version:          binary.BigEndian.Uint16(b[0:]),
		Count:            binary.BigEndian.Uint16(b[2:]),
		SysUptime:        binary.BigEndian.Uint32(b[4:]),
		UnixSecs:         binary.BigEndian.Uint32(b[8:]),
		UnixNsecs:        binary.BigEndian.Uint32(b[12:]),
		FlowSequence:     binary.BigEndian.Uint32(b[16:]),
		EngineType:       b[20],
		EngineID:         b[21],
		SamplingInterval: binary.BigEndian.Uint16(b[22:]),
	}
	if h.Version != 5 {
		return out, ErrVersion
	}
	n := int(h.Count)
	var err error
	if fit := (len(b) - HeaderLen) / RecordLen; n > fit {
		n, err = fit, ErrCount
	}
	b = b[HeaderLen:]
	for range n {
		r := b[:RecordLen:RecordLen]
		out = append(out, Record{
			SrcAddr:  [4]byte(r[0:4]),
			DstAddr:  [4]byte(r[4:8]),
			NextHop:  [4]byte(r[8:12]),
			Input:    binary.BigEndian.Uint16(r[12:]),
			Output:   binary.BigEndian.Uint16(r[14:]),
			Packets:  binary.BigEndian.Uint32(r[16:]),
			Octets:   binary.BigEndian.Uint32(r[20:]),
			First:    binary.BigEndian.Uint32(r[24:]),
			Last:     binary.BigEndian.Uint32(r[28:]),
			SrcPort:  binary.BigEndian.Uint16(r[32:]),
			DstPort:  binary.BigEndian.Uint16(r[34:]),
			TCPFlags: r[37],
			Proto:    r[38],
			Tos:      r[39],
			SrcAS:    binary.BigEndian.Uint16(r[40:]),
			DstAS:    binary.BigEndian.Uint16(r[42:]),
			SrcMask:  r[44],
			DstMask:  r[45],
		})
		b = b[RecordLen:]
	}
	return out, err
}
