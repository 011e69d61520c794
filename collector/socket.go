package collector

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/ccflow/ccflow/flow"
)

// listenerSpec is one configured listener.
type listenerSpec struct {
	key      string
	cfg      ListenerConfig
	fallback flow.Protocol
}

// batchReader reads many datagrams per system call; ipv4.PacketConn and
// ipv6.PacketConn (whose Message types are the same) implement it with
// recvmmsg on Linux.
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// socket is one bound UDP socket and the worker index that reads it.
type socket struct {
	spec   listenerSpec
	id     int
	conn   *net.UDPConn
	batch  batchReader
	addr   netip.AddrPort
	rcvbuf int
	once   sync.Once
}

func (s *socket) close() { s.once.Do(func() { _ = s.conn.Close() }) }

// openListener binds l.cfg.Sockets sockets to the listener's address (the
// first one picks the port when the address has port 0). Worker indexes
// start at firstID.
func openListener(ctx context.Context, l listenerSpec, firstID int) ([]*socket, error) {
	host, _, err := net.SplitHostPort(l.cfg.Addr)
	if err != nil {
		return nil, err
	}
	addr := l.cfg.Addr
	var out []*socket
	for i := range l.cfg.Sockets {
		s, err := openSocket(ctx, l, addr)
		if err != nil {
			for _, s := range out {
				s.close()
			}
			return nil, err
		}
		s.id = firstID + i
		if i == 0 {
			addr = net.JoinHostPort(host, fmt.Sprint(s.addr.Port()))
		}
		out = append(out, s)
	}
	return out, nil
}

func openSocket(ctx context.Context, l listenerSpec, addr string) (*socket, error) {
	lc := net.ListenConfig{Control: socketControl(l.cfg.ReceiveBuffer, l.cfg.Sockets > 1)}
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	s := &socket{spec: l, conn: conn, addr: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	s.addr = netip.AddrPortFrom(s.addr.Addr().Unmap(), s.addr.Port())
	if s.addr.Addr().Is4() {
		s.batch = ipv4.NewPacketConn(conn)
	} else {
		s.batch = ipv6.NewPacketConn(conn)
	}
	s.rcvbuf = receiveBuffer(conn)
	return s, nil
}
