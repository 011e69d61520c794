// Package netflowtest builds NetFlow v9 and IPFIX datagrams for tests:
// templates, options templates, withdrawals and data sets with fixed,
// reduced-size, variable-length and enterprise-specific fields. Use it with
// documentation addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
// 2001:db8::/32) only.
package netflowtest

import (
	"encoding/binary"
	"net/netip"
)

// VarLen is the field length that marks an IPFIX variable-length field.
const VarLen = 0xffff

// Field is a template field specifier; a non-zero PEN makes it an IPFIX
// enterprise-specific field.
type Field struct {
	Type   uint16
	Length uint16
	PEN    uint32
}

// Message is a NetFlow v9 or IPFIX datagram under construction.
type Message struct {
	version   uint16
	domain    uint32
	exportSec uint32
	sysUptime uint32
	sets      [][]byte
	records   int
}

// IPFIX starts an IPFIX message for an observation domain.
func IPFIX(domain, exportSec uint32) *Message {
	return &Message{version: 10, domain: domain, exportSec: exportSec}
}

// V9 starts a NetFlow v9 message for a source ID.
func V9(sourceID, exportSec, sysUptimeMs uint32) *Message {
	return &Message{version: 9, domain: sourceID, exportSec: exportSec, sysUptime: sysUptimeMs}
}

func (m *Message) fieldSpecs(b []byte, fs []Field) []byte {
	for _, f := range fs {
		t := f.Type
		if f.PEN != 0 {
			t |= 0x8000
		}
		b = binary.BigEndian.AppendUint16(b, t)
		b = binary.BigEndian.AppendUint16(b, f.Length)
		if f.PEN != 0 {
			b = binary.BigEndian.AppendUint32(b, f.PEN)
		}
	}
	return b
}

// Set appends a set with any ID and body (padded to 4 bytes).
func (m *Message) Set(id uint16, body []byte) *Message {
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	s := binary.BigEndian.AppendUint16(nil, id)
	s = binary.BigEndian.AppendUint16(s, uint16(4+len(body)))
	m.sets = append(m.sets, append(s, body...))
	return m
}

// Template appends a template set with one template.
func (m *Message) Template(id uint16, fields ...Field) *Message {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = binary.BigEndian.AppendUint16(b, uint16(len(fields)))
	m.records++
	return m.Set(m.templateSetID(), m.fieldSpecs(b, fields))
}

func (m *Message) templateSetID() uint16 {
	if m.version == 9 {
		return 0
	}
	return 2
}

// OptionsTemplate appends an options template set with one options
// template. For NetFlow v9 the scope fields use v9 scope types (1 system,
// 2 interface, ...).
func (m *Message) OptionsTemplate(id uint16, scopes, options []Field) *Message {
	b := binary.BigEndian.AppendUint16(nil, id)
	m.records++
	if m.version == 9 {
		b = binary.BigEndian.AppendUint16(b, uint16(4*len(scopes)))
		b = binary.BigEndian.AppendUint16(b, uint16(4*len(options)))
		b = m.fieldSpecs(b, scopes)
		return m.Set(1, m.fieldSpecs(b, options))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(scopes)+len(options)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(scopes)))
	b = m.fieldSpecs(b, scopes)
	return m.Set(3, m.fieldSpecs(b, options))
}

// Withdraw appends an IPFIX template withdrawal (set 2, or set 3 when
// options is set) for a template ID.
func (m *Message) Withdraw(id uint16, options bool) *Message {
	set := uint16(2)
	if options {
		set = 3
	}
	b := binary.BigEndian.AppendUint16(nil, id)
	return m.Set(set, binary.BigEndian.AppendUint16(b, 0))
}

// Data appends a data set of records, each the concatenation of its
// encoded field values.
func (m *Message) Data(id uint16, records ...[]byte) *Message {
	var body []byte
	for _, r := range records {
		body = append(body, r...)
	}
	m.records += len(records)
	return m.Set(id, body)
}

// Bytes returns the datagram.
func (m *Message) Bytes() []byte {
	var b []byte
	n := 0
	for _, s := range m.sets {
		n += len(s)
	}
	if m.version == 9 {
		b = binary.BigEndian.AppendUint16(b, 9)
		b = binary.BigEndian.AppendUint16(b, uint16(m.records))
		b = binary.BigEndian.AppendUint32(b, m.sysUptime)
		b = binary.BigEndian.AppendUint32(b, m.exportSec)
		b = binary.BigEndian.AppendUint32(b, 1)
		b = binary.BigEndian.AppendUint32(b, m.domain)
	} else {
		b = binary.BigEndian.AppendUint16(b, 10)
		b = binary.BigEndian.AppendUint16(b, uint16(16+n))
		b = binary.BigEndian.AppendUint32(b, m.exportSec)
		b = binary.BigEndian.AppendUint32(b, 1)
		b = binary.BigEndian.AppendUint32(b, m.domain)
	}
	for _, s := range m.sets {
		b = append(b, s...)
	}
	return b
}

// Record concatenates encoded field values into one record.
func Record(values ...[]byte) []byte {
	var b []byte
	for _, v := range values {
		b = append(b, v...)
	}
	return b
}

// U8 encodes a one-byte value.
func U8(v uint8) []byte { return []byte{v} }

// U16 encodes a two-byte value.
func U16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// U32 encodes a four-byte value.
func U32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// U64 encodes an eight-byte value.
func U64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Addr encodes an address (4 bytes for IPv4, 16 for IPv6).
func Addr(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

// Var encodes a variable-length value with its length prefix (one byte, or
// 255 and two bytes from 255 bytes on).
func Var(v []byte) []byte {
	if len(v) < 255 {
		return append([]byte{byte(len(v))}, v...)
	}
	return append(binary.BigEndian.AppendUint16([]byte{255}, uint16(len(v))), v...)
}
