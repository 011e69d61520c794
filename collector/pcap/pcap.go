// Package pcap reads and writes classic libpcap capture files, just enough
// for the collector's tests and load generator: recording exported UDP
// datagrams so that an independent dissector (tshark) can read them, and
// replaying recorded datagrams.
//
// Writers produce LINKTYPE_RAW files (IPv4 or IPv6 packets without a link
// header). Readers accept Ethernet (1), raw IP (101, 228, 229) and Linux
// cooked (113) captures in either byte order, with micro- or nanosecond
// timestamps. The package does not interpret anything above UDP.
package pcap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"
)

// Link types this package reads; LinkRaw is what it writes.
const (
	LinkEthernet = 1
	LinkRaw      = 101
	LinkLinuxSLL = 113
	LinkIPv4     = 228
	LinkIPv6     = 229
)

const (
	magicMicro       = 0xa1b2c3d4
	magicNano        = 0xa1b23c4d
	maxSnap          = 262144
	fileHeaderLength = 24
)

// ErrFormat is returned for input that is not a supported pcap file.
var ErrFormat = errors.New("pcap: unsupported or corrupt capture file")

// Writer writes a pcap file. It is not safe for concurrent use.
type Writer struct {
	w        *bufio.Writer
	linkType uint32
	buf      []byte
}

// NewWriter writes the file header for linkType and returns a Writer.
func NewWriter(w io.Writer, linkType uint32) (*Writer, error) {
	bw := bufio.NewWriter(w)
	var h [fileHeaderLength]byte
	binary.LittleEndian.PutUint32(h[0:], magicMicro)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], maxSnap)
	binary.LittleEndian.PutUint32(h[20:], linkType)
	if _, err := bw.Write(h[:]); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &Writer{w: bw, linkType: linkType}, nil
}

// WritePacket writes one packet record holding data.
func (w *Writer) WritePacket(ts time.Time, data []byte) error {
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(ts.Unix()))
	binary.LittleEndian.PutUint32(h[4:], uint32(ts.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(h[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(h[12:], uint32(len(data)))
	if _, err := w.w.Write(h[:]); err != nil {
		return fmt.Errorf("write pcap record: %w", err)
	}
	if _, err := w.w.Write(data); err != nil {
		return fmt.Errorf("write pcap record: %w", err)
	}
	return nil
}

// WriteUDP writes payload as a UDP datagram from src to dst inside an IPv4
// or IPv6 packet (by the address family of src). The Writer must have been
// created with LinkRaw. Checksums are zero: dissectors do not verify them.
func (w *Writer) WriteUDP(ts time.Time, src, dst netip.AddrPort, payload []byte) error {
	if w.linkType != LinkRaw {
		return fmt.Errorf("pcap: WriteUDP needs link type %d, file has %d", LinkRaw, w.linkType)
	}
	if len(payload) > 65507 {
		return fmt.Errorf("pcap: UDP payload of %d bytes is too long", len(payload))
	}
	b := w.buf[:0]
	udpLen := 8 + len(payload)
	if src.Addr().Unmap().Is4() {
		s, d := src.Addr().Unmap().As4(), dst.Addr().Unmap().As4()
		b = append(b, 0x45, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(20+udpLen))
		b = append(b, 0, 0, 0x40, 0, 64, 17, 0, 0)
		b = append(b, s[:]...)
		b = append(b, d[:]...)
		binary.BigEndian.PutUint16(b[10:], ipv4Checksum(b[:20]))
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(b, 0x60, 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(udpLen))
		b = append(b, 17, 64)
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(udpLen))
	b = append(b, 0, 0)
	b = append(b, payload...)
	w.buf = b
	return w.WritePacket(ts, b)
}

func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Flush writes buffered data to the underlying writer.
func (w *Writer) Flush() error { return w.w.Flush() }

// Packet is one record of a capture file. Data is only valid until the
// next call to Reader.Next.
type Packet struct {
	// Time is the capture timestamp.
	Time time.Time
	// Data is the captured bytes, starting with the link-layer header.
	Data []byte
	// OrigLen is the packet's length on the wire.
	OrigLen int
}

// Reader reads a pcap file. It is not safe for concurrent use.
type Reader struct {
	r        *bufio.Reader
	order    binary.ByteOrder
	nano     bool
	linkType uint32
	buf      []byte
}

// NewReader reads the file header and returns a Reader.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReader(r)
	var h [fileHeaderLength]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, fmt.Errorf("read pcap header: %w", err)
	}
	rd := &Reader{r: br}
	switch {
	case binary.LittleEndian.Uint32(h[:]) == magicMicro:
		rd.order = binary.LittleEndian
	case binary.BigEndian.Uint32(h[:]) == magicMicro:
		rd.order = binary.BigEndian
	case binary.LittleEndian.Uint32(h[:]) == magicNano:
		rd.order, rd.nano = binary.LittleEndian, true
	case binary.BigEndian.Uint32(h[:]) == magicNano:
		rd.order, rd.nano = binary.BigEndian, true
	default:
		return nil, ErrFormat
	}
	rd.linkType = rd.order.Uint32(h[20:]) & 0x0fffffff
	return rd, nil
}

// LinkType returns the file's link type.
func (r *Reader) LinkType() uint32 { return r.linkType }

// Next returns the next packet, or io.EOF at the end of the file.
func (r *Reader) Next() (Packet, error) {
	var h [16]byte
	if _, err := io.ReadFull(r.r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Packet{}, ErrFormat
		}
		return Packet{}, err
	}
	sec, frac := r.order.Uint32(h[0:]), r.order.Uint32(h[4:])
	incl, orig := r.order.Uint32(h[8:]), r.order.Uint32(h[12:])
	if incl > maxSnap {
		return Packet{}, ErrFormat
	}
	if cap(r.buf) < int(incl) {
		r.buf = make([]byte, incl)
	}
	r.buf = r.buf[:incl]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return Packet{}, ErrFormat
	}
	ns := int64(frac) * 1000
	if r.nano {
		ns = int64(frac)
	}
	return Packet{Time: time.Unix(int64(sec), ns), Data: r.buf, OrigLen: int(orig)}, nil
}

// IP returns the IP packet inside p (stripping an Ethernet, VLAN or Linux
// cooked header for those link types), or nil when p holds no IPv4 or IPv6
// packet.
func (r *Reader) IP(p Packet) []byte {
	b := p.Data
	var etype uint16
	switch r.linkType {
	case LinkRaw, LinkIPv4, LinkIPv6:
		return b
	case LinkEthernet:
		if len(b) < 14 {
			return nil
		}
		etype, b = binary.BigEndian.Uint16(b[12:]), b[14:]
		for (etype == 0x8100 || etype == 0x88a8) && len(b) >= 4 {
			etype, b = binary.BigEndian.Uint16(b[2:]), b[4:]
		}
	case LinkLinuxSLL:
		if len(b) < 16 {
			return nil
		}
		etype, b = binary.BigEndian.Uint16(b[14:]), b[16:]
	default:
		return nil
	}
	if etype != 0x0800 && etype != 0x86dd {
		return nil
	}
	return b
}

// UDP returns the addresses and payload of a UDP datagram in the IP packet
// ip (as returned by IP). ok is false for anything else, including IPv4
// fragments and IPv6 packets with extension headers.
func UDP(ip []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	if len(ip) < 1 {
		return src, dst, nil, false
	}
	var sa, da netip.Addr
	var l4 []byte
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return src, dst, nil, false
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if ip[9] != 17 || ihl < 20 || total > len(ip) || total < ihl || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return src, dst, nil, false
		}
		sa, da = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		l4 = ip[ihl:total]
	case 6:
		if len(ip) < 40 || ip[6] != 17 {
			return src, dst, nil, false
		}
		plen := int(binary.BigEndian.Uint16(ip[4:]))
		if 40+plen > len(ip) {
			return src, dst, nil, false
		}
		sa, da = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		l4 = ip[40 : 40+plen]
	default:
		return src, dst, nil, false
	}
	if len(l4) < 8 {
		return src, dst, nil, false
	}
	ulen := int(binary.BigEndian.Uint16(l4[4:]))
	if ulen < 8 || ulen > len(l4) {
		return src, dst, nil, false
	}
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(l4[0:]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(l4[2:]))
	return src, dst, l4[8:ulen], true
}

// Datagram is one UDP datagram read from a capture file.
type Datagram struct {
	// Time is the capture time.
	Time time.Time
	// Src and Dst are the UDP endpoints.
	Src, Dst netip.AddrPort
	// Payload is the UDP payload (a copy, owned by the caller).
	Payload []byte
}

// ReadDatagrams reads every UDP datagram of a capture file.
func ReadDatagrams(r io.Reader) ([]Datagram, error) {
	rd, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	var out []Datagram
	for {
		p, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		src, dst, payload, ok := UDP(rd.IP(p))
		if !ok {
			continue
		}
		out = append(out, Datagram{Time: p.Time, Src: src, Dst: dst, Payload: append([]byte(nil), payload...)})
	}
}
