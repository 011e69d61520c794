//go:build !linux

package collector

import (
	"net"
	"syscall"
)

// msgTrunc is the message flag of a datagram cut to the buffer size.
const msgTrunc = 0x20

// oobSize is zero where SO_RXQ_OVFL does not exist.
var oobSize = 0

// socketControl sets no options outside Linux; several sockets per port
// then fail to bind.
func socketControl(int, bool) func(network, address string, c syscall.RawConn) error {
	return nil
}

// receiveBuffer is unknown outside Linux.
func receiveBuffer(*net.UDPConn) int { return 0 }

// socketDrops is unavailable outside Linux.
func socketDrops([]byte) (uint32, bool) { return 0, false }
