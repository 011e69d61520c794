package sim

import "net/netip"

// Record is one synthetic flow as a router would meter it, before export
// sampling. Times are event time. Encoders read Records and never keep or
// modify them.
type Record struct {
	// StartMs and EndMs are the times of the flow's first and last packet,
	// Unix milliseconds of event time. EndMs >= StartMs.
	StartMs int64
	EndMs   int64
	// Src and Dst are the flow's addresses; both are IPv4 or both IPv6
	// (Src decides: IPv4-mapped IPv6 counts as IPv4). An address of the
	// other family or an invalid one is encoded as zeros.
	Src netip.Addr
	Dst netip.Addr
	// SrcPort and DstPort are the transport ports.
	SrcPort uint16
	DstPort uint16
	// Proto is the IP protocol number (6 TCP, 17 UDP).
	Proto uint8
	// TCPFlags is the OR of the TCP flags of the flow's packets (0 for UDP).
	TCPFlags uint8
	// Packets and Bytes count the flow's packets and their IP bytes
	// (IP header included). Packets >= 1.
	Packets uint64
	Bytes   uint64
	// InIf and OutIf are the SNMP interface indexes the flow entered and
	// left the router by.
	InIf  uint32
	OutIf uint32
	// Subscriber is the index of the subscriber this flow belongs to (as
	// source or destination). Run uses it to pick the exporter (router)
	// that serves the subscriber. It is never encoded.
	Subscriber int32
}

// Is6 reports whether the record is an IPv6 flow.
func (r *Record) Is6() bool { return r.Src.Is6() && !r.Src.Is4In6() }

// as4 returns a as 4 bytes (unmapping IPv4-mapped IPv6), or zeros when a
// is not IPv4.
func as4(a netip.Addr) [4]byte {
	if a = a.Unmap(); a.Is4() {
		return a.As4()
	}
	return [4]byte{}
}

// as16 returns a as 16 bytes, or zeros when a is invalid.
func as16(a netip.Addr) [16]byte {
	if a.IsValid() {
		return a.As16()
	}
	return [16]byte{}
}

// Protocol numbers used by the simulator.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// TCP flag bits.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)
