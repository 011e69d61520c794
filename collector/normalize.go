package collector

import (
	"github.com/ccflow/ccflow/collector/netflow"
	"github.com/ccflow/ccflow/collector/netflow5"
	"github.com/ccflow/ccflow/collector/sflow"
	"github.com/ccflow/ccflow/flow"
)

// The normalize functions map the decoders' protocol-faithful records to
// flow.Record. They allocate nothing.

// mapped4 returns an IPv4 address as a 16-byte IPv4-mapped address.
func mapped4(a [4]byte) flow.RawAddr {
	return flow.RawAddr{10: 0xff, 11: 0xff, 12: a[0], 13: a[1], 14: a[2], 15: a[3]}
}

// uptimeMs converts an exporter uptime stamp to Unix ms, given the export
// time (Unix ms) and the uptime at export; 32-bit wrap-around is handled.
func uptimeMs(exportMs int64, uptimeAtExport, stamp uint32) int64 {
	return exportMs - int64(int32(uptimeAtExport-stamp))
}

// normV5 fills rec from a NetFlow v5 record.
func normV5(rec *flow.Record, h *netflow5.Header, r *netflow5.Record, exporter flow.Addr, recvMs int64) {
	exportMs := int64(h.UnixSecs)*1000 + int64(h.UnixNsecs/1e6)
	*rec = flow.Record{
		TimeStartMs:    uptimeMs(exportMs, h.SysUptime, r.First),
		TimeEndMs:      uptimeMs(exportMs, h.SysUptime, r.Last),
		TimeReceivedMs: recvMs,
		Protocol:       flow.ProtocolNetFlow5,
		Exporter:       exporter,
		ObsDomain:      uint32(h.EngineType)<<8 | uint32(h.EngineID),
		InIf:           uint32(r.Input),
		OutIf:          uint32(r.Output),
		SrcAddr:        mapped4(r.SrcAddr),
		DstAddr:        mapped4(r.DstAddr),
		SrcPort:        r.SrcPort,
		DstPort:        r.DstPort,
		Proto:          r.Proto,
		TCPFlags:       r.TCPFlags,
		Bytes:          uint64(r.Octets),
		Packets:        uint64(r.Packets),
		SamplingRate:   uint32(h.SamplingInterval & 0x3fff),
	}
}

// ntpToMs converts a 64-bit NTP timestamp to Unix ms.
func ntpToMs(t uint64) int64 {
	const ntpEpochOffset = 2208988800
	return (int64(t>>32)-ntpEpochOffset)*1000 + int64((t&0xffffffff)*1000>>32)
}

// flowTime returns a NetFlow v9/IPFIX record's start (or end) time in
// Unix ms from the first time field it has, in order: milliseconds, seconds,
// microseconds, nanoseconds, delta microseconds, system uptime (relative to
// the v9 header uptime, or to systemInitTimeMilliseconds for IPFIX); else
// the export time.
func flowTime(r *netflow.Record, end bool) int64 {
	exportMs := int64(r.ExportSec) * 1000
	fMs, fSec, fUs, fNs, fDelta, fUp := netflow.FieldStartMs, netflow.FieldStartSec, netflow.FieldStartUs, netflow.FieldStartNs, netflow.FieldStartDeltaUs, netflow.FieldFirstUptime
	ms, sec, us, ns, delta, up := r.StartMs, r.StartSec, r.StartUs, r.StartNs, r.StartDeltaUs, r.FirstUptime
	if end {
		fMs, fSec, fUs, fNs, fDelta, fUp = netflow.FieldEndMs, netflow.FieldEndSec, netflow.FieldEndUs, netflow.FieldEndNs, netflow.FieldEndDeltaUs, netflow.FieldLastUptime
		ms, sec, us, ns, delta, up = r.EndMs, r.EndSec, r.EndUs, r.EndNs, r.EndDeltaUs, r.LastUptime
	}
	switch {
	case r.HasField(fMs):
		return int64(ms)
	case r.HasField(fSec):
		return int64(sec) * 1000
	case r.HasField(fUs):
		return ntpToMs(us)
	case r.HasField(fNs):
		return ntpToMs(ns)
	case r.HasField(fDelta):
		return exportMs - int64(delta/1000)
	case r.HasField(fUp) && r.Version == 9:
		return uptimeMs(exportMs, r.SysUptime, up)
	case r.HasField(fUp) && r.SystemInitMs != 0:
		return int64(r.SystemInitMs) + int64(up)
	}
	return exportMs
}

// normNetFlow fills rec from a NetFlow v9 or IPFIX record.
func normNetFlow(rec *flow.Record, r *netflow.Record, exporter flow.Addr) {
	p := flow.ProtocolNetFlow9
	if r.Version == 10 {
		p = flow.ProtocolIPFIX
	}
	*rec = flow.Record{
		TimeStartMs:    flowTime(r, false),
		TimeEndMs:      flowTime(r, true),
		TimeReceivedMs: r.ReceivedMs,
		Protocol:       p,
		Exporter:       exporter,
		ObsDomain:      r.Domain,
		InIf:           r.InIf,
		OutIf:          r.OutIf,
		SrcPort:        r.SrcPort,
		DstPort:        r.DstPort,
		Proto:          r.Proto,
		TCPFlags:       uint8(r.TCPFlags),
		SamplingRate:   r.SamplingRate,
		SrcMAC:         r.SrcMAC,
		DstMAC:         r.DstMAC,
		PostNATSrcPort: r.PostNATSrcPort,
		PostNATDstPort: r.PostNATDstPort,
	}
	switch {
	case r.HasField(netflow.FieldSrcV4):
		rec.SrcAddr = mapped4(r.SrcV4)
	case r.HasField(netflow.FieldSrcV6):
		rec.SrcAddr = flow.RawAddr(r.SrcV6)
	}
	switch {
	case r.HasField(netflow.FieldDstV4):
		rec.DstAddr = mapped4(r.DstV4)
	case r.HasField(netflow.FieldDstV6):
		rec.DstAddr = flow.RawAddr(r.DstV6)
	}
	switch {
	case r.HasField(netflow.FieldOctets):
		rec.Bytes = r.Octets
	case r.HasField(netflow.FieldOctetsTotal):
		rec.Bytes = r.OctetsTotal
	case r.HasField(netflow.FieldPostOctets):
		rec.Bytes = r.PostOctets
	}
	switch {
	case r.HasField(netflow.FieldPackets):
		rec.Packets = r.Packets
	case r.HasField(netflow.FieldPacketsTotal):
		rec.Packets = r.PacketsTotal
	case r.HasField(netflow.FieldPostPackets):
		rec.Packets = r.PostPackets
	}
	if r.HasField(netflow.FieldDirection) {
		switch r.Direction {
		case 0:
			rec.Direction = flow.DirectionIngress
		case 1:
			rec.Direction = flow.DirectionEgress
		}
	}
	if r.HasField(netflow.FieldVLAN) {
		rec.VLAN = r.VLAN
	} else if r.HasField(netflow.FieldDot1qVLAN) {
		rec.VLAN = r.Dot1qVLAN
	}
	switch r.Proto {
	case 1:
		if r.HasField(netflow.FieldICMPTypeCode) {
			rec.DstPort = r.ICMPTypeCode
		} else if r.HasField(netflow.FieldICMPType) {
			rec.DstPort = uint16(r.ICMPType)<<8 | uint16(r.ICMPCode)
		}
	case 58:
		if r.HasField(netflow.FieldICMPTypeCodeV6) {
			rec.DstPort = r.ICMPTypeCodeV6
		} else if r.HasField(netflow.FieldICMPTypeV6) {
			rec.DstPort = uint16(r.ICMPTypeV6)<<8 | uint16(r.ICMPCodeV6)
		}
	}
}

// normSFlow fills rec from an sFlow flow sample. The sampled header is
// parsed when present (Ethernet, IPv4 or IPv6); otherwise a sampled IPv4 or
// IPv6 record is used. Bytes is the sampled frame's length (or the sampled
// IP record's length) and Packets is 1: each sample stands for one packet.
func normSFlow(rec *flow.Record, d *sflow.Datagram, s *sflow.FlowSample, recvMs int64) {
	*rec = flow.Record{
		TimeStartMs:    recvMs,
		TimeEndMs:      recvMs,
		TimeReceivedMs: recvMs,
		Protocol:       flow.ProtocolSFlow5,
		Exporter:       flow.AddrFromSlice(d.Agent()),
		ObsDomain:      d.SubAgentID,
		Packets:        1,
		SamplingRate:   s.SamplingRate,
	}
	if s.InputFormat == 0 {
		rec.InIf = s.Input
	}
	if s.OutputFormat == 0 {
		rec.OutIf = s.Output
	}
	if s.Has&sflow.HasSwitch != 0 {
		rec.VLAN = uint16(s.Switch.SrcVLAN)
	}
	switch {
	case s.Has&sflow.HasHeader != 0:
		rec.Bytes = uint64(s.Header.FrameLength)
		var p sflow.Packet
		sflow.ParseHeader(s.Header.Protocol, s.Header.Data, &p)
		if p.Has&sflow.PacketEthernet != 0 {
			rec.SrcMAC, rec.DstMAC = p.SrcMAC, p.DstMAC
			if p.VLAN != 0 {
				rec.VLAN = p.VLAN
			}
		}
		if p.Has&sflow.PacketIP != 0 {
			rec.SrcAddr, rec.DstAddr = ipAddr(p.IPVersion == 4, &p.Src), ipAddr(p.IPVersion == 4, &p.Dst)
			rec.Proto = p.Proto
		}
		if p.Has&sflow.PacketPorts != 0 {
			rec.SrcPort, rec.DstPort = p.SrcPort, p.DstPort
		}
		rec.TCPFlags = p.TCPFlags
	case s.Has&(sflow.HasIPv4|sflow.HasIPv6) != 0:
		v4 := s.Has&sflow.HasIPv4 != 0
		rec.Bytes = uint64(s.IP.Length)
		rec.SrcAddr, rec.DstAddr = ipAddr(v4, &s.IP.Src), ipAddr(v4, &s.IP.Dst)
		rec.Proto = uint8(s.IP.Protocol)
		rec.SrcPort, rec.DstPort = uint16(s.IP.SrcPort), uint16(s.IP.DstPort)
		rec.TCPFlags = uint8(s.IP.TCPFlags)
	}
}

func ipAddr(v4 bool, a *[16]byte) flow.RawAddr {
	if v4 {
		return mapped4([4]byte(a[:4]))
	}
	return flow.RawAddr(*a)
}
