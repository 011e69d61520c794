package netflow

import "encoding/binary"

// Field identifies one decoded field of a Record. Record.Has has bit
// 1<<Field set when the field was present in the record with a valid
// length.
type Field uint8

// Decoded fields and the information elements (NetFlow v9 field types and
// IPFIX IEs, which share numbers) they come from. A field whose value has an
// invalid length for its type (an address that is not 4 or 16 bytes, an
// unsigned integer longer than its type) is ignored.
const (
	fieldSkip                   Field = iota // not decoded
	FieldOctets                              // IE 1 octetDeltaCount / IN_BYTES
	FieldPackets                             // IE 2 packetDeltaCount / IN_PKTS
	FieldPostOctets                          // IE 23 postOctetDeltaCount / OUT_BYTES
	FieldPostPackets                         // IE 24 postPacketDeltaCount / OUT_PKTS
	FieldOctetsTotal                         // IE 85 octetTotalCount
	FieldPacketsTotal                        // IE 86 packetTotalCount
	FieldProto                               // IE 4 protocolIdentifier
	FieldTos                                 // IE 5 ipClassOfService
	FieldTCPFlags                            // IE 6 tcpControlBits
	FieldSrcPort                             // IE 7 sourceTransportPort
	FieldDstPort                             // IE 11 destinationTransportPort
	FieldSrcV4                               // IE 8 sourceIPv4Address
	FieldDstV4                               // IE 12 destinationIPv4Address
	FieldSrcV6                               // IE 27 sourceIPv6Address
	FieldDstV6                               // IE 28 destinationIPv6Address
	FieldInIf                                // IE 10 ingressInterface
	FieldOutIf                               // IE 14 egressInterface
	FieldLastUptime                          // IE 21 flowEndSysUpTime (ms)
	FieldFirstUptime                         // IE 22 flowStartSysUpTime (ms)
	FieldStartSec                            // IE 150 flowStartSeconds
	FieldEndSec                              // IE 151 flowEndSeconds
	FieldStartMs                             // IE 152 flowStartMilliseconds
	FieldEndMs                               // IE 153 flowEndMilliseconds
	FieldStartUs                             // IE 154 flowStartMicroseconds (NTP format)
	FieldEndUs                               // IE 155 flowEndMicroseconds (NTP format)
	FieldStartNs                             // IE 156 flowStartNanoseconds (NTP format)
	FieldEndNs                               // IE 157 flowEndNanoseconds (NTP format)
	FieldStartDeltaUs                        // IE 158 flowStartDeltaMicroseconds
	FieldEndDeltaUs                          // IE 159 flowEndDeltaMicroseconds
	FieldSystemInit                          // IE 160 systemInitTimeMilliseconds
	FieldIPVersion                           // IE 60 ipVersion
	FieldDirection                           // IE 61 flowDirection
	FieldSrcMAC                              // IE 56 sourceMacAddress
	FieldDstMAC                              // IE 80 destinationMacAddress
	FieldVLAN                                // IE 58 vlanId
	FieldDot1qVLAN                           // IE 243 dot1qVlanId
	FieldICMPTypeCode                        // IE 32 icmpTypeCodeIPv4
	FieldICMPTypeCodeV6                      // IE 139 icmpTypeCodeIPv6
	FieldICMPType                            // IE 176 icmpTypeIPv4
	FieldICMPCode                            // IE 177 icmpCodeIPv4
	FieldICMPTypeV6                          // IE 178 icmpTypeIPv6
	FieldICMPCodeV6                          // IE 179 icmpCodeIPv6
	FieldPostNATSrcPort                      // IE 227 postNAPTSourceTransportPort
	FieldPostNATDstPort                      // IE 228 postNAPTDestinationTransportPort
	FieldSamplingInterval                    // IE 34 samplingInterval
	FieldSamplingAlgorithm                   // IE 35 samplingAlgorithm
	FieldSamplerID                           // IE 48 samplerId / FLOW_SAMPLER_ID
	FieldSamplerMode                         // IE 49 samplerMode
	FieldSamplerRandomInterval               // IE 50 samplerRandomInterval
	FieldSelectorID                          // IE 302 selectorId
	FieldSamplingPacketInterval              // IE 305 samplingPacketInterval
	FieldSamplingPacketSpace                 // IE 306 samplingPacketSpace
	numFields
)

// ieField maps information element numbers below 512 to fields.
var ieField = [512]Field{
	1: FieldOctets, 2: FieldPackets, 23: FieldPostOctets, 24: FieldPostPackets,
	85: FieldOctetsTotal, 86: FieldPacketsTotal,
	4: FieldProto, 5: FieldTos, 6: FieldTCPFlags, 7: FieldSrcPort, 11: FieldDstPort,
	8: FieldSrcV4, 12: FieldDstV4, 27: FieldSrcV6, 28: FieldDstV6,
	10: FieldInIf, 14: FieldOutIf, 21: FieldLastUptime, 22: FieldFirstUptime,
	150: FieldStartSec, 151: FieldEndSec, 152: FieldStartMs, 153: FieldEndMs,
	154: FieldStartUs, 155: FieldEndUs, 156: FieldStartNs, 157: FieldEndNs,
	158: FieldStartDeltaUs, 159: FieldEndDeltaUs, 160: FieldSystemInit,
	60: FieldIPVersion, 61: FieldDirection, 56: FieldSrcMAC, 80: FieldDstMAC,
	58: FieldVLAN, 243: FieldDot1qVLAN,
	32: FieldICMPTypeCode, 139: FieldICMPTypeCodeV6, 176: FieldICMPType, 177: FieldICMPCode,
	178: FieldICMPTypeV6, 179: FieldICMPCodeV6, 227: FieldPostNATSrcPort, 228: FieldPostNATDstPort,
	34: FieldSamplingInterval, 35: FieldSamplingAlgorithm, 48: FieldSamplerID, 49: FieldSamplerMode,
	50: FieldSamplerRandomInterval, 302: FieldSelectorID, 305: FieldSamplingPacketInterval,
	306: FieldSamplingPacketSpace,
}

// fieldOf returns the field an IE decodes into (fieldSkip for enterprise-
// specific and unknown elements).
func fieldOf(ie uint16, enterprise bool) Field {
	if enterprise || int(ie) >= len(ieField) {
		return fieldSkip
	}
	return ieField[ie]
}

// Record is one decoded NetFlow v9 or IPFIX data record: the header context
// it arrived with, the sampling rate in effect for it, and the values of the
// information elements ccflow uses. A field is valid only when its bit is set
// in Has (see Field); other elements of the template are skipped.
type Record struct {
	// Version is 9 (NetFlow v9) or 10 (IPFIX).
	Version uint16
	// Domain is the v9 source ID or the IPFIX observation domain ID.
	Domain uint32
	// ExportSec is the header's export time (Unix seconds).
	ExportSec uint32
	// SysUptime is the v9 header's system uptime (ms); 0 for IPFIX.
	SysUptime uint32
	// ReceivedMs is when the datagram carrying the record was received
	// (Unix ms, as passed to Session.Decode).
	ReceivedMs int64
	// SystemInitMs is the exporter's boot time (Unix ms) from IE 160 in the
	// record or in the domain's options data; 0 when unknown. It anchors the
	// IPFIX flowStart/EndSysUpTime fields.
	SystemInitMs uint64
	// SamplingRate is the 1:N sampling for the record (0 unknown): the
	// record's own sampling fields, else the sampler or selector it names in
	// the domain's options data, else the domain's last announced rate.
	SamplingRate uint32

	// Has has bit 1<<f set for every field f decoded.
	Has uint64

	Octets, Packets           uint64
	PostOctets, PostPackets   uint64
	OctetsTotal, PacketsTotal uint64
	Proto, Tos                uint8
	TCPFlags                  uint16
	SrcPort, DstPort          uint16
	SrcV4, DstV4              [4]byte
	SrcV6, DstV6              [16]byte
	InIf, OutIf               uint32
	LastUptime, FirstUptime   uint32
	StartSec, EndSec          uint32
	StartMs, EndMs            uint64
	StartUs, EndUs            uint64 // NTP timestamps
	StartNs, EndNs            uint64 // NTP timestamps
	StartDeltaUs, EndDeltaUs  uint32
	SystemInit                uint64 // IE 160 as found in this record
	IPVersion, Direction      uint8
	SrcMAC, DstMAC            [6]byte
	VLAN, Dot1qVLAN           uint16
	ICMPTypeCode              uint16
	ICMPTypeCodeV6            uint16
	ICMPType, ICMPCode        uint8
	ICMPTypeV6, ICMPCodeV6    uint8
	PostNATSrcPort            uint16
	PostNATDstPort            uint16
	SamplingInterval          uint32
	SamplingAlgorithm         uint8
	SamplerID                 uint64
	SamplerMode               uint8
	SamplerRandomInterval     uint32
	SelectorID                uint64
	SamplingPacketInterval    uint32
	SamplingPacketSpace       uint32
}

// HasField reports whether field f was decoded into r.
func (r *Record) HasField(f Field) bool { return r.Has&(1<<f) != 0 }

// SetField decodes value v of information element ie (non-enterprise) into
// r exactly as a compiled template does. It is the slow path used by tests
// and tools to interpret values decoded elsewhere; v must not be retained.
func SetField(r *Record, ie uint16, v []byte) { set(r, fieldOf(ie, false), v) }

// uintN reads an unsigned big-endian integer of 1 to max bytes; ok is false
// for other lengths (reduced-size encoding, RFC 7011 section 6.2, allows
// shorter values but never longer ones).
func uintN(v []byte, max int) (uint64, bool) {
	switch len(v) {
	case 1:
		return uint64(v[0]), true
	case 2:
		return uint64(binary.BigEndian.Uint16(v)), max >= 2
	case 4:
		return uint64(binary.BigEndian.Uint32(v)), max >= 4
	case 8:
		return binary.BigEndian.Uint64(v), max >= 8
	}
	if len(v) == 0 || len(v) > max {
		return 0, false
	}
	var x uint64
	for _, c := range v {
		x = x<<8 | uint64(c)
	}
	return x, true
}

// set decodes v into field f of r; values of an invalid length are ignored.
func set(r *Record, f Field, v []byte) {
	var x uint64
	ok := true
	switch f {
	case fieldSkip:
		return
	case FieldSrcV4, FieldDstV4:
		if len(v) != 4 {
			return
		}
		if f == FieldSrcV4 {
			r.SrcV4 = [4]byte(v)
		} else {
			r.DstV4 = [4]byte(v)
		}
		r.Has |= 1 << f
		return
	case FieldSrcV6, FieldDstV6:
		if len(v) != 16 {
			return
		}
		if f == FieldSrcV6 {
			r.SrcV6 = [16]byte(v)
		} else {
			r.DstV6 = [16]byte(v)
		}
		r.Has |= 1 << f
		return
	case FieldSrcMAC, FieldDstMAC:
		if len(v) != 6 {
			return
		}
		if f == FieldSrcMAC {
			r.SrcMAC = [6]byte(v)
		} else {
			r.DstMAC = [6]byte(v)
		}
		r.Has |= 1 << f
		return
	case FieldStartUs, FieldEndUs, FieldStartNs, FieldEndNs:
		if len(v) != 8 {
			return
		}
		x = binary.BigEndian.Uint64(v)
		switch f {
		case FieldStartUs:
			r.StartUs = x
		case FieldEndUs:
			r.EndUs = x
		case FieldStartNs:
			r.StartNs = x
		default:
			r.EndNs = x
		}
		r.Has |= 1 << f
		return
	case FieldOctets, FieldPackets, FieldPostOctets, FieldPostPackets, FieldOctetsTotal,
		FieldPacketsTotal, FieldStartMs, FieldEndMs, FieldSystemInit, FieldSamplerID, FieldSelectorID:
		x, ok = uintN(v, 8)
	case FieldInIf, FieldOutIf, FieldLastUptime, FieldFirstUptime, FieldStartSec, FieldEndSec,
		FieldStartDeltaUs, FieldEndDeltaUs, FieldSamplingInterval, FieldSamplerRandomInterval,
		FieldSamplingPacketInterval, FieldSamplingPacketSpace:
		x, ok = uintN(v, 4)
	case FieldTCPFlags, FieldSrcPort, FieldDstPort, FieldVLAN, FieldDot1qVLAN, FieldICMPTypeCode,
		FieldICMPTypeCodeV6, FieldPostNATSrcPort, FieldPostNATDstPort:
		x, ok = uintN(v, 2)
	default:
		x, ok = uintN(v, 1)
	}
	if !ok {
		return
	}
	r.Has |= 1 << f
	switch f {
	case FieldOctets:
		r.Octets = x
	case FieldPackets:
		r.Packets = x
	case FieldPostOctets:
		r.PostOctets = x
	case FieldPostPackets:
		r.PostPackets = x
	case FieldOctetsTotal:
		r.OctetsTotal = x
	case FieldPacketsTotal:
		r.PacketsTotal = x
	case FieldProto:
		r.Proto = uint8(x)
	case FieldTos:
		r.Tos = uint8(x)
	case FieldTCPFlags:
		r.TCPFlags = uint16(x)
	case FieldSrcPort:
		r.SrcPort = uint16(x)
	case FieldDstPort:
		r.DstPort = uint16(x)
	case FieldInIf:
		r.InIf = uint32(x)
	case FieldOutIf:
		r.OutIf = uint32(x)
	case FieldLastUptime:
		r.LastUptime = uint32(x)
	case FieldFirstUptime:
		r.FirstUptime = uint32(x)
	case FieldStartSec:
		r.StartSec = uint32(x)
	case FieldEndSec:
		r.EndSec = uint32(x)
	case FieldStartMs:
		r.StartMs = x
	case FieldEndMs:
		r.EndMs = x
	case FieldStartDeltaUs:
		r.StartDeltaUs = uint32(x)
	case FieldEndDeltaUs:
		r.EndDeltaUs = uint32(x)
	case FieldSystemInit:
		r.SystemInit = x
	case FieldIPVersion:
		r.IPVersion = uint8(x)
	case FieldDirection:
		r.Direction = uint8(x)
	case FieldVLAN:
		r.VLAN = uint16(x)
	case FieldDot1qVLAN:
		r.Dot1qVLAN = uint16(x)
	case FieldICMPTypeCode:
		r.ICMPTypeCode = uint16(x)
	case FieldICMPTypeCodeV6:
		r.ICMPTypeCodeV6 = uint16(x)
	case FieldICMPType:
		r.ICMPType = uint8(x)
	case FieldICMPCode:
		r.ICMPCode = uint8(x)
	case FieldICMPTypeV6:
		r.ICMPTypeV6 = uint8(x)
	case FieldICMPCodeV6:
		r.ICMPCodeV6 = uint8(x)
	case FieldPostNATSrcPort:
		r.PostNATSrcPort = uint16(x)
	case FieldPostNATDstPort:
		r.PostNATDstPort = uint16(x)
	case FieldSamplingInterval:
		r.SamplingInterval = uint32(x)
	case FieldSamplingAlgorithm:
		r.SamplingAlgorithm = uint8(x)
	case FieldSamplerID:
		r.SamplerID = x
	case FieldSamplerMode:
		r.SamplerMode = uint8(x)
	case FieldSamplerRandomInterval:
		r.SamplerRandomInterval = uint32(x)
	case FieldSelectorID:
		r.SelectorID = x
	case FieldSamplingPacketInterval:
		r.SamplingPacketInterval = uint32(x)
	case FieldSamplingPacketSpace:
		r.SamplingPacketSpace = uint32(x)
	}
}

// OwnRate returns the 1:N sampling rate that r's own sampling fields state,
// or 0. The precedence is goflow2's: samplingPacketInterval (with
// samplingPacketSpace: (interval+space)/interval, RFC 5477; without: the
// interval itself, the common 1-in-N usage), then samplerRandomInterval,
// then samplingInterval.
func (r *Record) OwnRate() uint32 {
	switch {
	case r.HasField(FieldSamplingPacketInterval):
		i := uint64(r.SamplingPacketInterval)
		if !r.HasField(FieldSamplingPacketSpace) {
			return uint32(i)
		}
		if i == 0 {
			return 0
		}
		return uint32((i + uint64(r.SamplingPacketSpace)) / i)
	case r.HasField(FieldSamplerRandomInterval):
		return r.SamplerRandomInterval
	case r.HasField(FieldSamplingInterval):
		return r.SamplingInterval
	}
	return 0
}
