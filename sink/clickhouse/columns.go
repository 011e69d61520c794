package clickhouse

import (
	"net/netip"
	"time"

	"github.com/ccflow/ccflow/flow"
)

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

// flowRow returns the values of one flows row, in FlowColumns order.
func flowRow(f *flow.Pseudo, id flow.BatchID) []any {
	return []any{
		ms(f.TimeStartMs), ms(f.TimeEndMs), f.Protocol.String(),
		netip.AddrFrom16(f.Exporter), f.ObsDomain, f.InIf, f.OutIf,
		f.Kind.String(), f.Direction.String(), f.Epoch,
		f.Sub[:], f.SubPort, f.Peer[:], f.PeerPort,
		netip.AddrFrom16(f.Remote), f.RemotePort, netip.AddrFrom16(f.TransitSrc), f.TransitSrcPort,
		f.Proto, f.TCPFlags, f.Bytes, f.Packets,
		f.SamplingRate, f.RemoteASN, f.RemoteASOrg,
		f.RemoteCountry, f.Provider,
		f.Intel, f.ExporterName, f.InIfName,
		f.OutIfName, id[:],
	}
}
