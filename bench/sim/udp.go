package sim

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// UDPWriter sends datagrams to one collector address over a connected UDP
// socket, in batches with sendmmsg where the system has it. It implements
// io.Writer and BatchWriter; it is not safe for concurrent use.
type UDPWriter struct {
	conn *net.UDPConn
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
}

var _ BatchWriter = (*UDPWriter)(nil)

// DialUDP connects a UDP socket to addr (HOST:PORT) with a large send buffer.
func DialUDP(addr string) (*UDPWriter, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", addr, err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	_ = c.SetWriteBuffer(4 << 20)
	u := &UDPWriter{conn: c, pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, batchMax)}
	for i := range u.msgs {
		u.msgs[i].Buffers = make([][]byte, 1)
	}
	return u, nil
}

// LocalAddr returns the socket's local address (an sFlow agent address
// that matches the datagrams' source).
func (u *UDPWriter) LocalAddr() netip.Addr {
	if a, ok := u.conn.LocalAddr().(*net.UDPAddr); ok {
		if ap := a.AddrPort(); ap.IsValid() {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}

// Write sends one datagram.
func (u *UDPWriter) Write(b []byte) (int, error) { return u.conn.Write(b) }

// WriteBatch sends dgrams, skipping (and counting) those the system refuses,
// for example while no collector listens (ECONNREFUSED).
func (u *UDPWriter) WriteBatch(dgrams [][]byte) (int, error) {
	failed := 0
	var first error
	for len(dgrams) > 0 {
		n := min(len(dgrams), len(u.msgs))
		for i := 0; i < n; i++ {
			u.msgs[i].Buffers[0] = dgrams[i]
		}
		sent, err := u.pc.WriteBatch(u.msgs[:n], 0)
		if err != nil {
			if first == nil {
				first = err
			}
			// The first message failed: skip it.
			if sent <= 0 {
				sent = 1
				failed++
			}
		}
		dgrams = dgrams[sent:]
	}
	return failed, first
}

// Close closes the socket.
func (u *UDPWriter) Close() error { return u.conn.Close() }
