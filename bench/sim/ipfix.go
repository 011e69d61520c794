package sim

import "encoding/binary"

// IPFIX layout (RFC 7011). Template 256 carries IPv4 flows, 257 IPv6 flows,
// 258 is the options template announcing the sampling interval.
const (
	ipfixHeaderLen  = 16
	ipfixRec4Len    = 56
	ipfixRec6Len    = 80
	ipfixTemplate4  = 256
	ipfixTemplate6  = 257
	ipfixOptionsTID = 258
)

var (
	ipfixFields4 = [][2]uint16{
		{152, 8}, // flowStartMilliseconds
		{153, 8}, // flowEndMilliseconds
		{8, 4},   // sourceIPv4Address
		{12, 4},  // destinationIPv4Address
		{7, 2},   // sourceTransportPort
		{11, 2},  // destinationTransportPort
		{4, 1},   // protocolIdentifier
		{6, 2},   // tcpControlBits (RFC 7125 size)
		{1, 8},   // octetDeltaCount
		{2, 8},   // packetDeltaCount
		{10, 4},  // ingressInterface
		{14, 4},  // egressInterface
		{61, 1},  // flowDirection (0 ingress)
	}
	ipfixFields6 = [][2]uint16{
		{152, 8}, {153, 8},
		{27, 16}, // sourceIPv6Address
		{28, 16}, // destinationIPv6Address
		{7, 2}, {11, 2}, {4, 1}, {6, 2}, {1, 8}, {2, 8}, {10, 4}, {14, 4}, {61, 1},
	}
)

// IPFIXEncoder encodes Records as IPFIX messages: a template set with an
// IPv4 template (256) and an IPv6 template (257) first and then every
// TemplateRefresh messages or TemplateInterval of event time; with sampling,
// an options template (258, scope observationDomainId) and options data with
// samplingInterval (34) and samplingAlgorithm (35, 2 = random) alongside.
// Data records carry flowStartMilliseconds/flowEndMilliseconds (absolute
// event time), addresses, ports, protocol, tcpControlBits, octetDeltaCount,
// packetDeltaCount, ingressInterface, egressInterface and flowDirection. The
// header's sequence number counts data records (options data included), as
// RFC 7011 says.
type IPFIXEncoder struct {
	templated
	tmplData uint32 // data records in tmpl (the options data record)
}

var _ Encoder = (*IPFIXEncoder)(nil)

// NewIPFIXEncoder returns an IPFIX encoder.
func NewIPFIXEncoder(cfg EncoderConfig) (*IPFIXEncoder, error) {
	t, err := newTemplated(cfg)
	if err != nil {
		return nil, err
	}
	e := &IPFIXEncoder{templated: t}
	e.layout = dataLayout{id4: ipfixTemplate4, id6: ipfixTemplate6, len4: ipfixRec4Len, len6: ipfixRec6Len, put: putIPFIX}
	e.buildTemplates()
	return e, nil
}

// Format returns FormatIPFIX.
func (e *IPFIXEncoder) Format() Format { return FormatIPFIX }

func (e *IPFIXEncoder) buildTemplates() {
	b := make([]byte, 0, 256)
	b = appendTemplateSet(b, 2, template{ipfixTemplate4, ipfixFields4}, template{ipfixTemplate6, ipfixFields6})
	if e.sampler.Rate() > 1 {
		// Options template set (3): scope observationDomainId (149),
		// options samplingInterval (34) and samplingAlgorithm (35).
		b = appendSet(b, 3, func(b []byte) []byte {
			be := binary.BigEndian
			b = be.AppendUint16(b, ipfixOptionsTID)
			b = be.AppendUint16(b, 3) // field count
			b = be.AppendUint16(b, 1) // scope field count
			b = be.AppendUint16(b, 149)
			b = be.AppendUint16(b, 4)
			b = be.AppendUint16(b, 34)
			b = be.AppendUint16(b, 4)
			b = be.AppendUint16(b, 35)
			return be.AppendUint16(b, 1)
		})
		b = appendSamplingData(b, ipfixOptionsTID, e.cfg.ObservationDomain, e.sampler.Rate())
		e.tmplData = 1
	}
	e.tmpl = b
}

// Encode builds one IPFIX message; see Encoder.
func (e *IPFIXEncoder) Encode(dst []byte, recs []Record, exportMs int64) ([]byte, int, int) {
	be := binary.BigEndian
	b := grow(dst, e.cfg.MaxDatagram)
	off := ipfixHeaderLen
	withTmpl := e.clock.due(exportMs)
	var dataRecs uint32
	if withTmpl {
		off += copy(b[off:], e.tmpl)
		dataRecs += e.tmplData
	}
	off, i, flows := e.appendRecords(b, off, recs)
	if flows == 0 && !withTmpl {
		return b[:0], i, 0
	}
	if withTmpl {
		e.clock.mark(exportMs)
	}
	e.clock.sinceLast++
	be.PutUint16(b[0:], 10)
	be.PutUint16(b[2:], uint16(off))
	be.PutUint32(b[4:], uint32(exportMs/1000))
	be.PutUint32(b[8:], e.seq)
	be.PutUint32(b[12:], e.cfg.ObservationDomain)
	e.seq += dataRecs + uint32(flows)
	return b[:off], i, flows
}

// putIPFIX writes s as a data record of template 256 (IPv4) or 257 (v6).
func putIPFIX(p []byte, s *Record, v6 bool) {
	be := binary.BigEndian
	be.PutUint64(p[0:], uint64(s.StartMs))
	be.PutUint64(p[8:], uint64(s.EndMs))
	var q []byte
	if !v6 {
		a, d := as4(s.Src), as4(s.Dst)
		copy(p[16:20], a[:])
		copy(p[20:24], d[:])
		q = p[24:]
	} else {
		a, d := as16(s.Src), as16(s.Dst)
		copy(p[16:32], a[:])
		copy(p[32:48], d[:])
		q = p[48:]
	}
	be.PutUint16(q[0:], s.SrcPort)
	be.PutUint16(q[2:], s.DstPort)
	q[4] = s.Proto
	be.PutUint16(q[5:], uint16(s.TCPFlags))
	be.PutUint64(q[7:], s.Bytes)
	be.PutUint64(q[15:], s.Packets)
	be.PutUint32(q[23:], s.InIf)
	be.PutUint32(q[27:], s.OutIf)
	q[31] = 0 // ingress
}
