// Package flow defines the records that ccflow's stages exchange.
//
// Two record types exist, and the difference between them is the project's
// privacy boundary:
//
//   - Record is a normalized, decoded flow as the collector sees it. It holds
//     raw addresses (some of which belong to subscribers), MAC addresses and
//     VLAN IDs. A Record never leaves the collector process: the privacy stage
//     turns it into a Pseudo before it reaches the bus, a file, a log line or a
//     metric (privacy invariant P1).
//   - Pseudo is the role-oriented, pseudonymized flow: the subscriber side is a
//     keyed pseudonym tagged with its key epoch, the remote side stays in the
//     clear (P5). Pseudo is what the bus, the detector and the sinks use, and a
//     pseudonym never shares a field with a real address.
//
// The package holds only these types and small helpers; it performs no I/O.
// ccflow is an application: its packages are not a public API.
package flow

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
)

// Protocol is the export protocol a Record was decoded from.
type Protocol uint8

// Export protocols. Their String forms are the values of the `protocol`
// metric label.
const (
	ProtocolUnknown Protocol = iota
	ProtocolNetFlow5
	ProtocolNetFlow9
	ProtocolIPFIX
	ProtocolSFlow5
	// ProtocolFile marks records read from flow archives (replay).
	ProtocolFile
)

var protocolNames = [...]string{"unknown", "netflow5", "netflow9", "ipfix", "sflow5", "file"}

// String returns the metric-label form of p ("netflow5", "netflow9", "ipfix",
// "sflow5", "file" or "unknown").
func (p Protocol) String() string {
	if int(p) < len(protocolNames) {
		return protocolNames[p]
	}
	return "unknown"
}

// Direction is the direction a router exported for a flow (IPFIX
// flowDirection, IE 61).
type Direction uint8

// Exported directions.
const (
	DirectionUnknown Direction = iota
	DirectionIngress
	DirectionEgress
)

// Addr is a 16-byte IP address; IPv4 addresses are stored IPv4-mapped
// (::ffff:a.b.c.d). Addr is used for addresses that may be shown in the clear:
// exporters (routers) and remote endpoints (P5). The zero Addr means "absent".
type Addr [16]byte

// AddrFrom converts a netip.Addr into an Addr (IPv4 becomes IPv4-mapped).
func AddrFrom(a netip.Addr) Addr { return Addr(a.As16()) }

// AddrFromSlice converts a 4- or 16-byte slice into an Addr. Other lengths
// give the zero Addr.
func AddrFromSlice(b []byte) Addr {
	var a Addr
	switch len(b) {
	case 4:
		a[10], a[11] = 0xff, 0xff
		copy(a[12:], b)
	case 16:
		copy(a[:], b)
	}
	return a
}

// Netip returns a as a netip.Addr, unmapping IPv4-mapped addresses.
func (a Addr) Netip() netip.Addr { return netip.AddrFrom16(a).Unmap() }

// IsZero reports whether a is the zero (absent) address.
func (a Addr) IsZero() bool { return a == Addr{} }

// Is4 reports whether a is an IPv4-mapped address.
func (a Addr) Is4() bool { return netip.AddrFrom16(a).Is4In6() }

// String returns the textual form of a (dotted quad for IPv4).
func (a Addr) String() string {
	if a.IsZero() {
		return ""
	}
	return a.Netip().String()
}

// RawAddr is an address as decoded from the wire, before the privacy stage
// has decided whether it belongs to a subscriber. It must be treated as
// subscriber data: its String, Format and LogValue methods print "REDACTED",
// so a RawAddr that reaches a log line, an error string or a panic message
// does not leak. Code that needs the value converts explicitly with Addr().
type RawAddr [16]byte

// Addr returns the address without redaction. Only the privacy stage and the
// collector's in-memory consumers may call it.
func (a RawAddr) Addr() Addr { return Addr(a) }

// IsZero reports whether a is the zero (absent) address.
func (a RawAddr) IsZero() bool { return a == RawAddr{} }

// String returns "REDACTED".
func (RawAddr) String() string { return "REDACTED" }

// GoString returns "REDACTED" (for %#v).
func (RawAddr) GoString() string { return "REDACTED" }

// Format prints "REDACTED" for every verb, so %x or %v cannot leak bytes.
func (RawAddr) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("REDACTED")) }

// LogValue implements slog.LogValuer and returns "REDACTED".
func (RawAddr) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// MAC is a 48-bit hardware address. Like RawAddr it prints as "REDACTED": MAC
// addresses identify subscriber devices and are dropped by the privacy stage.
type MAC [6]byte

// String returns "REDACTED".
func (MAC) String() string { return "REDACTED" }

// GoString returns "REDACTED" (for %#v).
func (MAC) GoString() string { return "REDACTED" }

// Format prints "REDACTED" for every verb.
func (MAC) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("REDACTED")) }

// LogValue implements slog.LogValuer and returns "REDACTED".
func (MAC) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Record is one normalized flow decoded from NetFlow v5/v9, IPFIX or sFlow,
// or read from a flow archive. Zero values mean "not exported". Record holds
// subscriber data and never leaves the collector process (see the package
// documentation); the privacy stage's field table in privacy/README.md says
// what becomes of each field.
type Record struct {
	// TimeStartMs and TimeEndMs are the flow's first and last packet times,
	// Unix milliseconds. For sFlow both are the time the sample was received.
	TimeStartMs int64
	TimeEndMs   int64
	// TimeReceivedMs is when the collector received the datagram (Unix ms).
	TimeReceivedMs int64

	// Protocol is the export protocol the record came from.
	Protocol Protocol
	// Exporter is the address the datagram came from (the router), or the
	// sFlow agent address when the datagram names one.
	Exporter Addr
	// ObsDomain is the IPFIX observation domain, NetFlow v9 source ID, sFlow
	// sub-agent ID; NetFlow v5 uses engine type << 8 | engine ID.
	ObsDomain uint32
	// InIf and OutIf are the SNMP interface indexes (sFlow: input/output).
	InIf  uint32
	OutIf uint32

	// SrcAddr and DstAddr are the flow's addresses, IPv4-mapped for IPv4.
	SrcAddr RawAddr
	DstAddr RawAddr
	// SrcPort and DstPort are the transport ports; for ICMP, DstPort holds
	// type<<8|code as NetFlow does and SrcPort is 0.
	SrcPort uint16
	DstPort uint16
	// Proto is the IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
	Proto uint8
	// TCPFlags is the OR of the TCP flags seen.
	TCPFlags uint8
	// Bytes and Packets are the counts as exported, not multiplied by the
	// sampling rate.
	Bytes   uint64
	Packets uint64
	// SamplingRate is the 1:N sampling in effect for the record; 0 means
	// unknown, 1 means unsampled.
	SamplingRate uint32
	// Direction is the exported flow direction, when exported.
	Direction Direction

	// SrcMAC and DstMAC are hardware addresses (sFlow Ethernet headers, IPFIX
	// IEs 56/80). Dropped by the privacy stage.
	SrcMAC MAC
	DstMAC MAC
	// VLAN is the (outer) VLAN ID. Dropped by the privacy stage.
	VLAN uint16
	// PostNATSrcPort and PostNATDstPort are NAT translated ports (IPFIX IEs
	// 227/228). Dropped or coarsened by the privacy stage.
	PostNATSrcPort uint16
	PostNATDstPort uint16
}

// Kind says which sides of a Pseudo flow are subscribers.
type Kind uint8

// Flow kinds.
const (
	// KindSubscriber: one side is a subscriber (Sub), the other is a remote
	// endpoint in the clear (Remote).
	KindSubscriber Kind = iota + 1
	// KindBoth: both sides are subscribers. Sub is the source side, Peer the
	// destination side; Remote is zero.
	KindBoth
	// KindTransit: neither side is a subscriber. Remote is the destination,
	// TransitSrc the source; Sub and Peer are zero.
	KindTransit
)

var kindNames = [...]string{"unknown", "subscriber", "both", "transit"}

// String returns "subscriber", "both", "transit" or "unknown".
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Dir is the direction of a Pseudo flow relative to the subscriber.
type Dir uint8

// Flow directions relative to the subscriber.
const (
	DirUnknown Dir = iota
	// DirOutbound: the subscriber is the flow's source.
	DirOutbound
	// DirInbound: the remote endpoint is the flow's source.
	DirInbound
)

var dirNames = [...]string{"unknown", "outbound", "inbound"}

// String returns "outbound", "inbound" or "unknown".
func (d Dir) String() string {
	if int(d) < len(dirNames) {
		return dirNames[d]
	}
	return "unknown"
}

// Pseudonym is a keyed, 16-byte pseudonym of a subscriber address (see the
// privacy package). Its String form is 32 lowercase hex digits, the token
// that `ccflow reveal` accepts.
type Pseudonym [16]byte

// String returns the pseudonym as 32 lowercase hex digits.
func (p Pseudonym) String() string { return hex.EncodeToString(p[:]) }

// IsZero reports whether p is the zero (absent) pseudonym.
func (p Pseudonym) IsZero() bool { return p == Pseudonym{} }

// ParsePseudonym parses the 32-hex-digit form produced by String.
func ParsePseudonym(s string) (Pseudonym, error) {
	var p Pseudonym
	if len(s) != 32 {
		return p, fmt.Errorf("pseudonym must be 32 hex digits, got %d characters", len(s))
	}
	if _, err := hex.Decode(p[:], []byte(s)); err != nil {
		return p, fmt.Errorf("pseudonym is not hex: %w", err)
	}
	return p, nil
}

// Pseudo is a pseudonymized, role-oriented flow: the only flow form that leaves
// the collector stage. The zero value of a field means "not known".
type Pseudo struct {
	// TimeStartMs and TimeEndMs are Unix milliseconds (event time).
	TimeStartMs int64
	TimeEndMs   int64

	// Protocol is the export protocol the flow came from.
	Protocol Protocol
	// Exporter is the router that exported the flow (not subscriber data).
	Exporter Addr
	// ObsDomain is the observation domain / source ID.
	ObsDomain uint32
	// InIf and OutIf are interface indexes after minimization (zero when
	// the privacy configuration drops them).
	InIf  uint32
	OutIf uint32

	// Kind says which sides are subscribers.
	Kind Kind
	// Direction is relative to the subscriber (outbound: subscriber is the
	// source). For KindBoth, Sub is the source so Direction is outbound;
	// for KindTransit it is unknown.
	Direction Dir
	// Epoch is the key epoch of Sub and Peer.
	Epoch uint32
	// Sub is the subscriber's pseudonym; SubPort its port (possibly
	// coarsened by the privacy configuration).
	Sub     Pseudonym
	SubPort uint16
	// Peer is the second subscriber's pseudonym (KindBoth only).
	Peer     Pseudonym
	PeerPort uint16
	// Remote is the remote endpoint, in the clear (P5); RemotePort its
	// port. For KindTransit, Remote is the destination.
	Remote     Addr
	RemotePort uint16
	// TransitSrc and TransitSrcPort are the source of a transit flow
	// (KindTransit only; neither side is a subscriber).
	TransitSrc     Addr
	TransitSrcPort uint16

	// Proto is the IP protocol number; TCPFlags the OR of TCP flags.
	Proto    uint8
	TCPFlags uint8
	// Bytes and Packets are as exported (not scaled by SamplingRate).
	Bytes   uint64
	Packets uint64
	// SamplingRate is the 1:N sampling of the flow (0 unknown, 1 none).
	SamplingRate uint32

	// Enrichment of the remote side (see the enrich package); empty when
	// not enriched. Strings are interned by the enricher and must be
	// treated as read-only.
	RemoteASN     uint32
	RemoteASOrg   string
	RemoteCountry string
	// Provider is the provider class of the remote AS from the enrichment
	// configuration (for example "cdn", "cloud", "push"); empty if none.
	Provider string
	// Intel holds the names of the threat-intel lists that contain Remote,
	// comma-separated, in configuration order.
	Intel string
	// ExporterName, InIfName and OutIfName come from configuration.
	ExporterName string
	InIfName     string
	OutIfName    string
}

// BatchID identifies a batch of flows end to end (bus messages, sink
// inserts), so that a stage that receives a batch twice can drop the
// duplicate. The first 8 bytes name the producing instance, the last 8 are
// a sequence number within it.
type BatchID [16]byte

// String returns the batch ID as 32 hex digits.
func (b BatchID) String() string { return hex.EncodeToString(b[:]) }

// Batch is a group of pseudonymized flows that travels as one unit.
type Batch struct {
	ID    BatchID
	Flows []Pseudo
}
