package sim

import (
	"encoding/binary"
	"math"
)

// NetFlow v9 layout (RFC 3954). Template 256 carries IPv4 flows, 257 IPv6
// flows, 258 is the options template announcing the sampling interval.
const (
	nf9HeaderLen  = 20
	nf9Rec4Len    = 39
	nf9Rec6Len    = 63
	nf9Template4  = 256
	nf9Template6  = 257
	nf9OptionsTID = 258
)

// nf9Fields4 and nf9Fields6 are the data template fields (type, length).
var (
	nf9Fields4 = [][2]uint16{
		{22, 4}, // FIRST_SWITCHED, ms of sysUptime
		{21, 4}, // LAST_SWITCHED
		{8, 4},  // IPV4_SRC_ADDR
		{12, 4}, // IPV4_DST_ADDR
		{7, 2},  // L4_SRC_PORT
		{11, 2}, // L4_DST_PORT
		{4, 1},  // PROTOCOL
		{6, 1},  // TCP_FLAGS
		{1, 4},  // IN_BYTES
		{2, 4},  // IN_PKTS
		{10, 4}, // INPUT_SNMP
		{14, 4}, // OUTPUT_SNMP
		{61, 1}, // DIRECTION (0 ingress)
	}
	nf9Fields6 = [][2]uint16{
		{22, 4}, {21, 4},
		{27, 16}, // IPV6_SRC_ADDR
		{28, 16}, // IPV6_DST_ADDR
		{7, 2}, {11, 2}, {4, 1}, {6, 1}, {1, 4}, {2, 4}, {10, 4}, {14, 4}, {61, 1},
	}
)

// NetFlow9Encoder encodes Records as NetFlow v9 export packets: a template
// flowset with an IPv4 template (256) and an IPv6 template (257) first and
// then every TemplateRefresh packets or TemplateInterval of event time; with
// sampling, an options template (258, scope System) and options data with
// SAMPLING_INTERVAL (34) and SAMPLING_ALGORITHM (35, 2 = random) alongside.
// Data records carry FIRST_SWITCHED/LAST_SWITCHED (ms of sysUptime),
// addresses, ports, protocol, TCP flags, IN_BYTES/IN_PKTS (4 bytes each,
// saturating), INPUT_SNMP/OUTPUT_SNMP (4 bytes) and DIRECTION.
//
// The header's sysUptime and unix_secs describe the same instant, the export
// time; when it is a whole second (Run always exports on whole seconds),
// unix_secs*1000 - sysUptime is the boot time exactly, so a collector
// recovers every record's times to the millisecond. Records must not start
// before BootMs; sysUptime wraps after 49.7 days, as on a router.
type NetFlow9Encoder struct {
	templated
	tmplRecs uint16 // records in tmpl: templates, options template and data
}

var _ Encoder = (*NetFlow9Encoder)(nil)

// NewNetFlow9Encoder returns a NetFlow v9 encoder.
func NewNetFlow9Encoder(cfg EncoderConfig) (*NetFlow9Encoder, error) {
	t, err := newTemplated(cfg)
	if err != nil {
		return nil, err
	}
	e := &NetFlow9Encoder{templated: t}
	e.layout = dataLayout{id4: nf9Template4, id6: nf9Template6, len4: nf9Rec4Len, len6: nf9Rec6Len, pad: true, put: e.putRecord}
	e.buildTemplates()
	return e, nil
}

// Format returns FormatNetFlow9.
func (e *NetFlow9Encoder) Format() Format { return FormatNetFlow9 }

func (e *NetFlow9Encoder) buildTemplates() {
	b := make([]byte, 0, 256)
	b = appendTemplateSet(b, 0, template{nf9Template4, nf9Fields4}, template{nf9Template6, nf9Fields6})
	e.tmplRecs = 2
	if e.sampler.Rate() > 1 {
		// Options template flowset (1): scope System (1), options
		// SAMPLING_INTERVAL (34) and SAMPLING_ALGORITHM (35).
		b = appendSet(b, 1, func(b []byte) []byte {
			be := binary.BigEndian
			b = be.AppendUint16(b, nf9OptionsTID)
			b = be.AppendUint16(b, 4) // option scope length, bytes
			b = be.AppendUint16(b, 8) // option length, bytes
			b = be.AppendUint16(b, 1) // scope: System
			b = be.AppendUint16(b, 4)
			b = be.AppendUint16(b, 34)
			b = be.AppendUint16(b, 4)
			b = be.AppendUint16(b, 35)
			return be.AppendUint16(b, 1)
		})
		b = appendSamplingData(b, nf9OptionsTID, e.cfg.ObservationDomain, e.sampler.Rate())
		e.tmplRecs += 2
	}
	e.tmpl = b
}

func sat32(v uint64) uint32 {
	if v > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(v)
}

// Encode builds one NetFlow v9 export packet; see Encoder.
func (e *NetFlow9Encoder) Encode(dst []byte, recs []Record, exportMs int64) ([]byte, int, int) {
	be := binary.BigEndian
	if e.cfg.BootMs == 0 {
		e.cfg.BootMs = exportMs - 3600_000
	}
	boot := e.cfg.BootMs
	b := grow(dst, e.cfg.MaxDatagram)
	off := nf9HeaderLen
	count := 0
	withTmpl := e.clock.due(exportMs)
	if withTmpl {
		off += copy(b[off:], e.tmpl)
		count += int(e.tmplRecs)
	}
	off, i, flows := e.appendRecords(b, off, recs)
	count += flows
	if flows == 0 && !withTmpl {
		return b[:0], i, 0
	}
	if withTmpl {
		e.clock.mark(exportMs)
	}
	e.clock.sinceLast++
	be.PutUint16(b[0:], 9)
	be.PutUint16(b[2:], uint16(count))
	be.PutUint32(b[4:], uint32(exportMs-boot))
	be.PutUint32(b[8:], uint32(exportMs/1000))
	be.PutUint32(b[12:], e.seq)
	be.PutUint32(b[16:], e.cfg.ObservationDomain)
	e.seq++
	return b[:off], i, flows
}

// putRecord writes s as a data record of template 256 (IPv4) or 257 (v6),
// its times in ms of sysUptime.
func (e *NetFlow9Encoder) putRecord(p []byte, s *Record, v6 bool) {
	be := binary.BigEndian
	boot := e.cfg.BootMs
	be.PutUint32(p[0:], uint32(s.StartMs-boot))
	be.PutUint32(p[4:], uint32(s.EndMs-boot))
	var q []byte
	if !v6 {
		a, d := as4(s.Src), as4(s.Dst)
		copy(p[8:12], a[:])
		copy(p[12:16], d[:])
		q = p[16:]
	} else {
		a, d := as16(s.Src), as16(s.Dst)
		copy(p[8:24], a[:])
		copy(p[24:40], d[:])
		q = p[40:]
	}
	be.PutUint16(q[0:], s.SrcPort)
	be.PutUint16(q[2:], s.DstPort)
	q[4] = s.Proto
	q[5] = s.TCPFlags
	be.PutUint32(q[6:], sat32(s.Bytes))
	be.PutUint32(q[10:], sat32(s.Packets))
	be.PutUint32(q[14:], s.InIf)
	be.PutUint32(q[18:], s.OutIf)
	q[22] = 0 // ingress
}
