package sim

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"
)

// Pcap writes datagrams into a pcap file (link type Ethernet) as complete
// UDP/IP packets, so that tools such as tshark can dissect what the
// simulator sends. It is safe for concurrent use by its Writers.
type Pcap struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
	// Now returns the capture timestamp of each packet; nil means time.Now.
	Now func() time.Time
}

// NewPcap writes the pcap file header to w.
func NewPcap(w io.Writer) (*Pcap, error) {
	p := &Pcap{w: bufio.NewWriterSize(w, 1<<16), buf: make([]byte, 0, 70000)}
	var h [24]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], 0xa1b2c3d4)
	le.PutUint16(h[4:], 2)
	le.PutUint16(h[6:], 4)
	le.PutUint32(h[16:], 65535) // snaplen
	le.PutUint32(h[20:], 1)     // LINKTYPE_ETHERNET
	if _, err := p.w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return p, nil
}

// Flush writes buffered packets to the underlying writer.
func (p *Pcap) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Flush()
}

// Writer returns an io.Writer that records each datagram written to it as
// a UDP packet from src to dst (both IPv4 or both IPv6).
func (p *Pcap) Writer(src, dst netip.AddrPort) io.Writer {
	return &pcapFlow{p: p, src: src, dst: dst}
}

type pcapFlow struct {
	p        *Pcap
	src, dst netip.AddrPort
	id       uint16
}

func (f *pcapFlow) Write(d []byte) (int, error) {
	p := f.p
	p.mu.Lock()
	defer p.mu.Unlock()
	be := binary.BigEndian
	b := p.buf[:0]
	v6 := f.src.Addr().Is6() && !f.src.Addr().Is4In6()
	b = append(b, macB[:]...)
	b = append(b, macA[:]...)
	udpLen := 8 + len(d)
	if v6 {
		b = be.AppendUint16(b, 0x86dd)
		b = be.AppendUint32(b, 0x60000000)
		b = be.AppendUint16(b, uint16(udpLen))
		b = append(b, 17, 64)
		s, t := as16(f.src.Addr()), as16(f.dst.Addr())
		b = append(b, s[:]...)
		b = append(b, t[:]...)
	} else {
		f.id++
		b = be.AppendUint16(b, 0x0800)
		ip := len(b)
		b = append(b, 0x45, 0)
		b = be.AppendUint16(b, uint16(20+udpLen))
		b = be.AppendUint16(b, f.id)
		b = be.AppendUint16(b, 0x4000)
		b = append(b, 64, 17, 0, 0)
		s, t := as4(f.src.Addr()), as4(f.dst.Addr())
		b = append(b, s[:]...)
		b = append(b, t[:]...)
		be.PutUint16(b[ip+10:], fold(sumWords(b[ip:ip+20])))
	}
	b = be.AppendUint16(b, f.src.Port())
	b = be.AppendUint16(b, f.dst.Port())
	b = be.AppendUint16(b, uint16(udpLen))
	b = be.AppendUint16(b, 0) // no UDP checksum (IPv4); see below for IPv6
	b = append(b, d...)
	if v6 {
		// IPv6 needs a UDP checksum.
		l4 := b[14+40:]
		sum := sumWords(b[14+8:14+40]) + 17 + uint32(udpLen) + sumWords(l4)
		if len(l4)%2 == 1 {
			sum += uint32(l4[len(l4)-1]) << 8
		}
		c := fold(sum)
		if c == 0 {
			c = 0xffff
		}
		be.PutUint16(l4[6:], c)
	}
	p.buf = b
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	t := now()
	var h [16]byte
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(t.Unix()))
	le.PutUint32(h[4:], uint32(t.Nanosecond()/1000))
	le.PutUint32(h[8:], uint32(len(b)))
	le.PutUint32(h[12:], uint32(len(b)))
	if _, err := p.w.Write(h[:]); err != nil {
		return 0, err
	}
	if _, err := p.w.Write(b); err != nil {
		return 0, err
	}
	return len(d), nil
}
