// Package sflow decodes sFlow version 5 datagrams (sflow.org
// SFLOW-DATAGRAM5 and SFLOW-STRUCTS5) and parses the packet headers that
// flow samples carry.
//
// Decode fills a caller-owned Datagram and appends one FlowSample per flow
// sample or expanded flow sample to a caller-owned slice; sampled headers
// point into the datagram, so nothing is allocated once the slice has grown.
// Counter samples are counted, not decoded. ParseHeader parses a sampled
// header (Ethernet with 802.1Q/QinQ tags, IPv4 or IPv6, then TCP, UDP,
// ICMP or ICMPv6) into a caller-owned Packet. Neither function panics or
// reads beyond its input.
//
// The decoder is ccflow's own; a differential test proves it equal to
// goflow2 v2.2.6's sFlow decoder on the test and fuzz corpora.
package sflow

import "encoding/binary"

// Error is a decoding error. Its string form (without the package prefix)
// is the `reason` label of the collector's decode-error metric.
type Error string

// Decoding errors. Decode reports the first problem of a datagram and keeps
// every sample it could decode.
const (
	// ErrShort: the datagram header, a sample or a record is truncated.
	ErrShort Error = "truncated"
	// ErrVersion: the version is not 5.
	ErrVersion Error = "bad_version"
	// ErrAgent: the agent address type is neither IPv4 nor IPv6.
	ErrAgent Error = "bad_agent"
	// ErrSampleCount: the header promises more samples than the datagram
	// holds (the samples present were decoded).
	ErrSampleCount Error = "bad_sample_count"
	// ErrSample: a flow sample's fixed fields are truncated; the sample
	// was skipped.
	ErrSample Error = "bad_sample"
	// ErrRecord: a flow record is shorter than its format requires, or a
	// sampled header is longer than its record; the record was skipped (a
	// sampled header is cut at the record's end).
	ErrRecord Error = "bad_record"
)

// Error implements error.
func (e Error) Error() string { return "sflow: " + string(e) }

// Reason returns the metric label of e.
func (e Error) Reason() string { return string(e) }

// Sample formats (enterprise 0).
const (
	formatFlow             = 1
	formatCounter          = 2
	formatExpandedFlow     = 3
	formatExpandedCounter  = 4
	recordRawHeader        = 1
	recordIPv4             = 3
	recordIPv6             = 4
	recordExtendedSwitch   = 1001
	flowSampleFixedLen     = 32
	expandedSampleFixedLen = 44
)

// Datagram is an sFlow v5 datagram header plus sample counts.
type Datagram struct {
	Version uint32
	// AgentIPVersion is 1 (IPv4) or 2 (IPv6); AgentIP holds the address in
	// its first 4 or 16 bytes.
	AgentIPVersion uint32
	AgentIP        [16]byte
	SubAgentID     uint32
	SequenceNumber uint32
	Uptime         uint32
	SamplesCount   uint32
	// FlowSamples, CounterSamples and OtherSamples count the samples
	// found by kind (flow and expanded flow; counter and expanded
	// counter; anything else).
	FlowSamples, CounterSamples, OtherSamples int
}

// Agent returns the agent address bytes (4 or 16).
func (d *Datagram) Agent() []byte {
	if d.AgentIPVersion == 2 {
		return d.AgentIP[:16]
	}
	return d.AgentIP[:4]
}

// FlowSample is a flow sample or an expanded flow sample with the flow
// records ccflow uses. When a sample holds several records of one kind, the
// last one counts.
type FlowSample struct {
	Expanded       bool
	SequenceNumber uint32
	SourceIDType   uint32
	SourceIDIndex  uint32
	SamplingRate   uint32
	SamplePool     uint32
	Drops          uint32
	// InputFormat and Input (OutputFormat, Output) are the interface
	// format (0: ifIndex, 1: discarded, 2: several) and value; compact
	// samples pack them as format<<30 | value.
	InputFormat, Input   uint32
	OutputFormat, Output uint32
	// RecordsCount is the record count the sample declares.
	RecordsCount uint32

	// Has has the Has* bits of the records found.
	Has    uint8
	Header SampledHeader
	// IP is the sampled IPv4 (HasIPv4) or IPv6 (HasIPv6) record.
	IP     SampledIP
	Switch ExtendedSwitch
}

// FlowSample.Has bits.
const (
	HasHeader uint8 = 1 << iota
	HasIPv4
	HasIPv6
	HasSwitch
)

// SampledHeader is a raw packet header record (format 1).
type SampledHeader struct {
	// Protocol is the header_protocol: 1 Ethernet, 11 IPv4, 12 IPv6, ...
	Protocol    uint32
	FrameLength uint32
	Stripped    uint32
	// Length is the header length the record declares; Data is the header
	// bytes (cut at the record's end), pointing into the datagram.
	Length uint32
	Data   []byte
}

// SampledIP is a sampled IPv4 (format 3) or IPv6 (format 4) record.
// Addresses fill the first 4 bytes of Src and Dst for IPv4.
type SampledIP struct {
	Length   uint32
	Protocol uint32
	Src, Dst [16]byte
	SrcPort  uint32
	DstPort  uint32
	TCPFlags uint32
	// TOS is the IPv4 type of service or the IPv6 priority.
	TOS uint32
}

// ExtendedSwitch is an extended switch record (format 1001).
type ExtendedSwitch struct {
	SrcVLAN, SrcPriority uint32
	DstVLAN, DstPriority uint32
}

func u32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// Decode decodes datagram b into d and appends its flow samples to out.
// Sampled headers in out point into b.
func Decode(b []byte, d *Datagram, out []FlowSample) ([]FlowSample, error) {
	*d = Datagram{}
	if len(b) < 8 {
		return out, ErrShort
	}
	d.Version = u32(b)
	if d.Version != 5 {
		return out, ErrVersion
	}
	d.AgentIPVersion = u32(b[4:])
	b = b[8:]
	n := 4
	switch d.AgentIPVersion {
	case 1:
	case 2:
		n = 16
	default:
		return out, ErrAgent
	}
	if len(b) < n+16 {
		return out, ErrShort
	}
	copy(d.AgentIP[:], b[:n])
	b = b[n:]
	d.SubAgentID, d.SequenceNumber, d.Uptime, d.SamplesCount = u32(b), u32(b[4:]), u32(b[8:]), u32(b[12:])
	b = b[16:]

	var err error
	note := func(e error) {
		if err == nil {
			err = e
		}
	}
	i := uint32(0)
	for ; i < d.SamplesCount && len(b) >= 8; i++ {
		format, l := u32(b), u32(b[4:])
		b = b[8:]
		if uint64(l) > uint64(len(b)) {
			note(ErrShort)
			break
		}
		body := b[:l]
		b = b[l:]
		switch format {
		case formatFlow, formatExpandedFlow:
			d.FlowSamples++
			var e error
			out, e = decodeFlowSample(format == formatExpandedFlow, body, out)
			note(e)
		case formatCounter, formatExpandedCounter:
			d.CounterSamples++
		default:
			d.OtherSamples++
		}
	}
	if i < d.SamplesCount {
		note(ErrSampleCount)
	}
	return out, err
}

// decodeFlowSample appends the (expanded) flow sample in body to out.
func decodeFlowSample(expanded bool, body []byte, out []FlowSample) ([]FlowSample, error) {
	var fs FlowSample
	fs.Expanded = expanded
	if !expanded {
		if len(body) < flowSampleFixedLen {
			return out, ErrSample
		}
		src := u32(body[4:])
		in, outIf := u32(body[20:]), u32(body[24:])
		fs.SequenceNumber = u32(body)
		fs.SourceIDType, fs.SourceIDIndex = src>>24, src&0x00ffffff
		fs.SamplingRate, fs.SamplePool, fs.Drops = u32(body[8:]), u32(body[12:]), u32(body[16:])
		fs.InputFormat, fs.Input = in>>30, in&0x3fffffff
		fs.OutputFormat, fs.Output = outIf>>30, outIf&0x3fffffff
		fs.RecordsCount = u32(body[28:])
		body = body[flowSampleFixedLen:]
	} else {
		if len(body) < expandedSampleFixedLen {
			return out, ErrSample
		}
		fs.SequenceNumber = u32(body)
		fs.SourceIDType, fs.SourceIDIndex = u32(body[4:]), u32(body[8:])
		fs.SamplingRate, fs.SamplePool, fs.Drops = u32(body[12:]), u32(body[16:]), u32(body[20:])
		fs.InputFormat, fs.Input = u32(body[24:]), u32(body[28:])
		fs.OutputFormat, fs.Output = u32(body[32:]), u32(body[36:])
		fs.RecordsCount = u32(body[40:])
		body = body[expandedSampleFixedLen:]
	}
	var err error
	for i := uint32(0); i < fs.RecordsCount && len(body) >= 8; i++ {
		format, l := u32(body), u32(body[4:])
		body = body[8:]
		if uint64(l) > uint64(len(body)) {
			err = ErrShort
			break
		}
		rec := body[:l]
		body = body[l:]
		if e := decodeRecord(&fs, format, rec); e != nil && err == nil {
			err = e
		}
	}
	return append(out, fs), err
}

// decodeRecord decodes the flow records ccflow uses into fs.
func decodeRecord(fs *FlowSample, format uint32, rec []byte) error {
	switch format {
	case recordRawHeader:
		if len(rec) < 16 {
			return ErrRecord
		}
		h := SampledHeader{Protocol: u32(rec), FrameLength: u32(rec[4:]), Stripped: u32(rec[8:]), Length: u32(rec[12:])}
		data := rec[16:]
		var err error
		if uint64(h.Length) > uint64(len(data)) {
			err = ErrRecord
		} else {
			data = data[:h.Length]
		}
		h.Data = data
		fs.Header = h
		fs.Has |= HasHeader
		return err
	case recordIPv4:
		if len(rec) < 32 {
			return ErrRecord
		}
		fs.IP = SampledIP{
			Length: u32(rec), Protocol: u32(rec[4:]),
			SrcPort: u32(rec[16:]), DstPort: u32(rec[20:]), TCPFlags: u32(rec[24:]), TOS: u32(rec[28:]),
		}
		copy(fs.IP.Src[:], rec[8:12])
		copy(fs.IP.Dst[:], rec[12:16])
		fs.Has = fs.Has&^HasIPv6 | HasIPv4
	case recordIPv6:
		if len(rec) < 56 {
			return ErrRecord
		}
		fs.IP = SampledIP{
			Length: u32(rec), Protocol: u32(rec[4:]),
			SrcPort: u32(rec[40:]), DstPort: u32(rec[44:]), TCPFlags: u32(rec[48:]), TOS: u32(rec[52:]),
		}
		copy(fs.IP.Src[:], rec[8:24])
		copy(fs.IP.Dst[:], rec[24:40])
		fs.Has = fs.Has&^HasIPv4 | HasIPv6
	case recordExtendedSwitch:
		if len(rec) < 16 {
			return ErrRecord
		}
		fs.Switch = ExtendedSwitch{SrcVLAN: u32(rec), SrcPriority: u32(rec[4:]), DstVLAN: u32(rec[8:]), DstPriority: u32(rec[12:])}
		fs.Has |= HasSwitch
	}
	return nil
}
