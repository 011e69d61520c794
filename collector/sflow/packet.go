package sflow

import "encoding/binary"

// Header protocols (header_protocol of a raw packet header record) that
// ParseHeader understands.
const (
	HeaderEthernet = 1
	HeaderIPv4     = 11
	HeaderIPv6     = 12
)

// Packet is what ParseHeader found in a sampled header. A field is valid
// only when the matching Has* bit is set.
type Packet struct {
	// Has has the Packet* bits of the layers found.
	Has uint8
	// SrcMAC, DstMAC, EtherType and VLAN (the outer 802.1Q/802.1ad tag's
	// VLAN ID, 0 when untagged) are set with PacketEthernet.
	SrcMAC, DstMAC [6]byte
	EtherType      uint16
	VLAN           uint16
	// IPVersion (4 or 6), Src, Dst (IPv4 in the first 4 bytes), Proto
	// (the transport protocol after IPv6 extension headers), TOS (IPv4
	// TOS or IPv6 traffic class) and Length (IPv4 total length, IPv6
	// payload length plus 40) are set with PacketIP.
	IPVersion uint8
	Src, Dst  [16]byte
	Proto     uint8
	TOS       uint8
	Length    uint16
	// SrcPort and DstPort are TCP/UDP ports; for ICMP and ICMPv6 DstPort
	// is type<<8|code and SrcPort 0. Set with PacketPorts.
	SrcPort, DstPort uint16
	// TCPFlags is set with PacketTCPFlags.
	TCPFlags uint8
}

// Packet.Has bits.
const (
	PacketEthernet uint8 = 1 << iota
	PacketIP
	PacketPorts
	PacketTCPFlags
	// PacketFragment: a non-first IP fragment, which carries no ports.
	PacketFragment
)

// maxExtHeaders bounds the IPv6 extension headers ParseHeader walks.
const maxExtHeaders = 8

// ParseHeader parses a sampled header of the given header_protocol into p.
// It parses as far as the header allows; sampled headers are often cut
// short, and a layer that is cut or unknown leaves its Has bit unset. It
// reports whether an IP layer was found.
func ParseHeader(protocol uint32, b []byte, p *Packet) bool {
	*p = Packet{}
	switch protocol {
	case HeaderEthernet:
		if len(b) < 14 {
			return false
		}
		copy(p.DstMAC[:], b[0:6])
		copy(p.SrcMAC[:], b[6:12])
		etype := binary.BigEndian.Uint16(b[12:])
		b = b[14:]
		for tags := 0; (etype == 0x8100 || etype == 0x88a8 || etype == 0x9100) && tags < 4; tags++ {
			if len(b) < 4 {
				p.EtherType = etype
				p.Has |= PacketEthernet
				return false
			}
			if tags == 0 {
				p.VLAN = binary.BigEndian.Uint16(b) & 0x0fff
			}
			etype = binary.BigEndian.Uint16(b[2:])
			b = b[4:]
		}
		p.EtherType = etype
		p.Has |= PacketEthernet
		switch etype {
		case 0x0800:
			return parseIPv4(b, p)
		case 0x86dd:
			return parseIPv6(b, p)
		}
		return false
	case HeaderIPv4:
		return parseIPv4(b, p)
	case HeaderIPv6:
		return parseIPv6(b, p)
	}
	return false
}

func parseIPv4(b []byte, p *Packet) bool {
	if len(b) < 20 || b[0]>>4 != 4 {
		return false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return false
	}
	p.IPVersion = 4
	p.TOS = b[1]
	p.Length = binary.BigEndian.Uint16(b[2:])
	p.Proto = b[9]
	copy(p.Src[:4], b[12:16])
	copy(p.Dst[:4], b[16:20])
	p.Has |= PacketIP
	if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
		p.Has |= PacketFragment
		return true
	}
	if ihl <= len(b) {
		parseL4(b[ihl:], p)
	}
	return true
}

func parseIPv6(b []byte, p *Packet) bool {
	if len(b) < 40 || b[0]>>4 != 6 {
		return false
	}
	p.IPVersion = 6
	p.TOS = uint8(binary.BigEndian.Uint16(b) >> 4)
	p.Length = binary.BigEndian.Uint16(b[4:]) + 40
	copy(p.Src[:], b[8:24])
	copy(p.Dst[:], b[24:40])
	p.Has |= PacketIP
	next := b[6]
	b = b[40:]
	for range maxExtHeaders {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < 8 {
				p.Proto = next
				return true
			}
			l := (int(b[1]) + 1) * 8
			next = b[0]
			if l > len(b) {
				p.Proto = next
				return true
			}
			b = b[l:]
			continue
		case 44: // fragment
			if len(b) < 8 {
				p.Proto = next
				return true
			}
			next = b[0]
			if binary.BigEndian.Uint16(b[2:])&0xfff8 != 0 {
				p.Proto = next
				p.Has |= PacketFragment
				return true
			}
			b = b[8:]
			continue
		case 51: // authentication header
			if len(b) < 8 {
				p.Proto = next
				return true
			}
			l := (int(b[1]) + 2) * 4
			next = b[0]
			if l > len(b) {
				p.Proto = next
				return true
			}
			b = b[l:]
			continue
		}
		break
	}
	p.Proto = next
	parseL4(b, p)
	return true
}

func parseL4(b []byte, p *Packet) {
	switch p.Proto {
	case 6:
		if len(b) >= 4 {
			p.SrcPort, p.DstPort = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
			p.Has |= PacketPorts
		}
		if len(b) >= 14 {
			p.TCPFlags = b[13]
			p.Has |= PacketTCPFlags
		}
	case 17, 132: // UDP, SCTP
		if len(b) >= 4 {
			p.SrcPort, p.DstPort = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
			p.Has |= PacketPorts
		}
	case 1, 58: // ICMP, ICMPv6
		if len(b) >= 2 {
			p.DstPort = uint16(b[0])<<8 | uint16(b[1])
			p.Has |= PacketPorts
		}
	}
}
