package sim

import "encoding/binary"

// sFlow v5 layout (sflow.org/sflow_version_5.txt).
const (
	sfFlowSample      = 1 // enterprise 0, format 1: flow_sample
	sfRawHeader       = 1 // enterprise 0, format 1: sampled_header
	sfSampleFixedLen  = 8 + 32 + 8 + 16
	sfHeaderProtoIPv6 = 12
)

// Documentation MAC addresses (RFC 7042, 00-00-5E-00-53-00/24) for the
// Ethernet headers of sampled frames: the router's ports, never a
// subscriber's device.
var (
	macA = [6]byte{0x00, 0x00, 0x5e, 0x00, 0x53, 0x01}
	macB = [6]byte{0x00, 0x00, 0x5e, 0x00, 0x53, 0x02}
)

// SFlowEncoder encodes Records as sFlow v5 datagrams of flow samples, one
// sample per sampled packet: a record of P packets yields P samples when
// unsampled and about P/N under 1:N sampling. Each flow sample carries
// sampling_rate N, sample_pool (packets seen by the data source), the input
// and output interfaces, and one sampled_header record holding the packet's
// Ethernet (header_protocol 1) or bare IP (11 for IPv4, 12 for IPv6) header
// and its TCP or UDP header, with frame_length the packet's length on the
// wire. Packet lengths split the record's bytes evenly; every packet carries
// the record's TCP flags. IPv4 header checksums are valid, and TCP/UDP
// checksums are those of a zero payload.
//
// sFlow has no flow timestamps: a collector timestamps samples when they
// arrive. Only the datagram's uptime (ms since BootMs, event time) follows
// event time.
type SFlowEncoder struct {
	cfg     EncoderConfig
	sampler *Sampler
	seq     uint32 // datagram sequence
	sseq    uint32 // flow sample sequence of the data source
	ipID    uint16
	hdrLen  int // datagram header length
	// pending holds a record whose samples did not all fit.
	pending    Record
	pendingN   uint64 // samples of pending still to send
	pendingIdx uint64 // index of the next sample of pending
}

var _ Encoder = (*SFlowEncoder)(nil)

// NewSFlowEncoder returns an sFlow v5 encoder.
func NewSFlowEncoder(cfg EncoderConfig) (*SFlowEncoder, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &SFlowEncoder{cfg: c, sampler: NewSampler(c.Sampling, c.Seed), hdrLen: 28}
	if c.AgentAddr.Is6() && !c.AgentAddr.Is4In6() {
		e.hdrLen = 40
	}
	return e, nil
}

// Format returns FormatSFlow5.
func (e *SFlowEncoder) Format() Format { return FormatSFlow5 }

// Pending reports whether samples of a consumed record still wait.
func (e *SFlowEncoder) Pending() bool { return e.pendingN > 0 }

// Sampler returns the encoder's packet sampler.
func (e *SFlowEncoder) Sampler() *Sampler { return e.sampler }

// sampleLen returns the encoded length of one flow sample of r.
func (e *SFlowEncoder) sampleLen(r *Record) int {
	return sfSampleFixedLen + pad4(e.headerLen(r))
}

// headerLen returns the sampled header length of r's packets.
func (e *SFlowEncoder) headerLen(r *Record) int {
	n := 20
	if r.Is6() {
		n = 40
	}
	if r.Proto == ProtoTCP {
		n += 20
	} else {
		n += 8
	}
	if e.cfg.SFlowHeader == SFlowHeaderEthernet {
		n += 14
	}
	return n
}

// Encode builds one sFlow v5 datagram; see Encoder.
func (e *SFlowEncoder) Encode(dst []byte, recs []Record, exportMs int64) ([]byte, int, int) {
	be := binary.BigEndian
	if e.cfg.BootMs == 0 {
		e.cfg.BootMs = exportMs - 3600_000
	}
	limit := e.cfg.MaxDatagram
	b := grow(dst, limit)
	off := e.hdrLen
	samples := 0
	// First the rest of a record split over datagrams.
	for e.pendingN > 0 && off+e.sampleLen(&e.pending) <= limit {
		off = e.putSample(b, off, &e.pending, e.pendingIdx)
		e.pendingIdx++
		e.pendingN--
		samples++
	}
	i := 0
	if e.pendingN == 0 {
		for ; i < len(recs); i++ {
			r := &recs[i]
			if e.sampler.passes(r) {
				continue
			}
			sl := e.sampleLen(r)
			if off+sl > limit {
				break
			}
			k := e.sampler.Sample(r, &e.pending)
			if k == 0 {
				continue
			}
			if e.cfg.Trace != nil {
				e.cfg.Trace(&e.pending)
			}
			var j uint64
			for ; j < k && off+sl <= limit; j++ {
				off = e.putSample(b, off, &e.pending, j)
				samples++
			}
			if j < k {
				e.pendingN, e.pendingIdx = k-j, j
				i++
				break
			}
		}
	}
	if samples == 0 {
		return b[:0], i, 0
	}
	be.PutUint32(b[0:], 5)
	if e.hdrLen == 28 {
		be.PutUint32(b[4:], 1)
		a := as4(e.cfg.AgentAddr)
		copy(b[8:12], a[:])
	} else {
		be.PutUint32(b[4:], 2)
		a := e.cfg.AgentAddr.As16()
		copy(b[8:24], a[:])
	}
	h := b[e.hdrLen-16:]
	be.PutUint32(h[0:], e.cfg.ObservationDomain)
	be.PutUint32(h[4:], e.seq)
	be.PutUint32(h[8:], uint32(exportMs-e.cfg.BootMs))
	be.PutUint32(h[12:], uint32(samples))
	e.seq++
	return b[:off], i, samples
}

// putSample writes flow sample j of the (sampled) record r at off and
// returns the new offset.
func (e *SFlowEncoder) putSample(b []byte, off int, r *Record, j uint64) int {
	be := binary.BigEndian
	hl := e.headerLen(r)
	sl := sfSampleFixedLen + pad4(hl)
	p := b[off : off+sl]
	e.sseq++
	// Packet j's IP length: the record's bytes split evenly.
	ipLen := r.Bytes / r.Packets
	if j < r.Bytes%r.Packets {
		ipLen++
	}
	l3l4 := hl
	if e.cfg.SFlowHeader == SFlowHeaderEthernet {
		l3l4 -= 14
	}
	if ipLen < uint64(l3l4) {
		ipLen = uint64(l3l4)
	}
	if ipLen > 65535 {
		ipLen = 65535
	}
	frameLen := uint32(ipLen)
	var stripped uint32
	proto := uint32(e.cfg.SFlowHeader)
	if e.cfg.SFlowHeader == SFlowHeaderEthernet {
		frameLen += 14 + 4 // Ethernet header and FCS
		stripped = 4
	} else if r.Is6() {
		proto = sfHeaderProtoIPv6
	}
	be.PutUint32(p[0:], sfFlowSample)
	be.PutUint32(p[4:], uint32(sl-8))
	be.PutUint32(p[8:], e.sseq)
	be.PutUint32(p[12:], e.cfg.SFlowSourceIndex) // source type 0 (ifIndex)
	be.PutUint32(p[16:], e.sampler.Rate())
	be.PutUint32(p[20:], uint32(e.sampler.Pool()))
	be.PutUint32(p[24:], 0) // drops
	be.PutUint32(p[28:], r.InIf)
	be.PutUint32(p[32:], r.OutIf)
	be.PutUint32(p[36:], 1) // one flow record
	be.PutUint32(p[40:], sfRawHeader)
	be.PutUint32(p[44:], uint32(16+pad4(hl)))
	be.PutUint32(p[48:], proto)
	be.PutUint32(p[52:], frameLen)
	be.PutUint32(p[56:], stripped)
	be.PutUint32(p[60:], uint32(hl))
	h := p[64:]
	if e.cfg.SFlowHeader == SFlowHeaderEthernet {
		copy(h[0:6], macB[:])
		copy(h[6:12], macA[:])
		if r.Is6() {
			be.PutUint16(h[12:], 0x86dd)
		} else {
			be.PutUint16(h[12:], 0x0800)
		}
		h = h[14:]
	}
	e.ipID++
	var l4 []byte
	var sum uint32
	l4len := uint32(ipLen)
	if r.Is6() {
		l4len -= 40
		be.PutUint32(h[0:], 0x60000000)
		be.PutUint16(h[4:], uint16(l4len))
		h[6] = r.Proto
		h[7] = 64
		a, d := as16(r.Src), as16(r.Dst)
		copy(h[8:24], a[:])
		copy(h[24:40], d[:])
		sum = sumWords(h[8:40])
		l4 = h[40:]
	} else {
		l4len -= 20
		h[0] = 0x45
		h[1] = 0
		be.PutUint16(h[2:], uint16(ipLen))
		be.PutUint16(h[4:], e.ipID)
		be.PutUint16(h[6:], 0x4000) // DF
		h[8] = 64
		h[9] = r.Proto
		h[10], h[11] = 0, 0
		a, d := as4(r.Src), as4(r.Dst)
		copy(h[12:16], a[:])
		copy(h[16:20], d[:])
		be.PutUint16(h[10:], fold(sumWords(h[0:20])))
		sum = sumWords(h[12:20])
		l4 = h[20:]
	}
	sum += uint32(r.Proto) + l4len
	be.PutUint16(l4[0:], r.SrcPort)
	be.PutUint16(l4[2:], r.DstPort)
	if r.Proto == ProtoTCP {
		be.PutUint32(l4[4:], uint32(j)*1000+1) // sequence number
		be.PutUint32(l4[8:], 1)                // acknowledgment number
		l4[12] = 5 << 4
		l4[13] = r.TCPFlags
		be.PutUint16(l4[14:], 65535) // window
		be.PutUint16(l4[16:], 0)     // checksum
		be.PutUint16(l4[18:], 0)     // urgent pointer
		if r.TCPFlags&tcpACK == 0 {
			be.PutUint32(l4[8:], 0)
		}
		be.PutUint16(l4[16:], fold(sum+sumWords(l4[0:20])))
	} else {
		be.PutUint16(l4[4:], uint16(l4len))
		be.PutUint16(l4[6:], 0)
		c := fold(sum + sumWords(l4[0:8]))
		if c == 0 {
			c = 0xffff
		}
		be.PutUint16(l4[6:], c)
	}
	for k := 64 + hl; k < sl; k++ {
		p[k] = 0
	}
	return off + sl
}

// sumWords returns the one's-complement sum (unfolded) of b's 16-bit words;
// len(b) is even.
func sumWords(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	return s
}

// fold folds a one's-complement sum and complements it: the checksum.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
