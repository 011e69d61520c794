package collector

import (
	"encoding/binary"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// msgTrunc is the message flag of a datagram cut to the buffer size.
const msgTrunc = unix.MSG_TRUNC

// oobSize is the control-message buffer per datagram: room for the
// SO_RXQ_OVFL drop counter.
var oobSize = unix.CmsgSpace(4)

// socketControl sets the socket options before bind: SO_REUSEPORT (when
// several sockets share the port), SO_RXQ_OVFL (the kernel then reports its
// drop counter with each datagram) and the receive buffer, forced past
// net.core.rmem_max when the process may (CAP_NET_ADMIN).
func socketControl(rcvbuf int, reuse bool) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if reuse {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
					return
				}
			}
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
			if rcvbuf > 0 {
				if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
					_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// receiveBuffer returns the socket's receive buffer as set (Linux reports
// and reserves twice the requested size; this returns half of that).
func receiveBuffer(conn *net.UDPConn) int {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0
	}
	var n int
	_ = rc.Control(func(fd uintptr) {
		n, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return n / 2
}

// socketDrops returns the kernel's drop counter from a datagram's control
// messages, and whether one was present.
func socketDrops(oob []byte) (uint32, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		// struct cmsghdr: a size_t length, then int level and type.
		var l int
		h := unix.SizeofCmsghdr - 8
		if h == 8 {
			l = int(binary.NativeEndian.Uint64(oob))
		} else {
			l = int(binary.NativeEndian.Uint32(oob))
		}
		level := int32(binary.NativeEndian.Uint32(oob[h:]))
		typ := int32(binary.NativeEndian.Uint32(oob[h+4:]))
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0, false
		}
		if level == unix.SOL_SOCKET && typ == unix.SO_RXQ_OVFL && l >= unix.SizeofCmsghdr+4 {
			return binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr:]), true
		}
		next := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if next > len(oob) {
			return 0, false
		}
		oob = oob[next:]
	}
	return 0, false
}
