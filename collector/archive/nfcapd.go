package archive

import (
	"fmt"
	"io"
	"net"

	nfdump "github.com/phaag/go-nfdump"

	"github.com/ccflow/ccflow/flow"
)

// nfcapdReader reads an nfcapd file (nfdump 1.7, "LZO/LZ4/ZSTD/none"
// compressed blocks) with github.com/phaag/go-nfdump, the reader by
// nfdump's author. The library decodes in a goroutine of its own and
// delivers records on a channel; Close drains it so the goroutine ends.
// nfdump 1.6 files are recognized by the library but not decoded.
type nfcapdReader struct {
	f       *nfdump.NfFile
	ch      chan *nfdump.FlowRecordV3
	skipped int
}

func openNfcapd(path string) (Reader, error) {
	f := nfdump.New()
	if err := f.Open(path); err != nil {
		return nil, fmt.Errorf("open nfcapd file: %w", err)
	}
	ch, err := f.AllRecords()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("read nfcapd records: %w", err)
	}
	return &nfcapdReader{f: f, ch: ch}, nil
}

func (n *nfcapdReader) Label() string { return "" }
func (n *nfcapdReader) Skipped() int  { return n.skipped }

func (n *nfcapdReader) Close() error {
	if n.ch != nil {
		for range n.ch { //nolint:revive // drain so the library's goroutine ends
		}
		n.ch = nil
	}
	return n.f.Close()
}

func (n *nfcapdReader) Next(rec *flow.Record) error {
	for {
		r, ok := <-n.ch
		if !ok {
			n.ch = nil
			return io.EOF
		}
		*rec = flow.Record{}
		if convertNfdump(r, n.f, rec) {
			return nil
		}
		n.skipped++
	}
}

func ipToRaw(ip net.IP) (flow.RawAddr, bool) {
	if ip4 := ip.To4(); ip4 != nil {
		return flow.RawAddr(flow.AddrFromSlice(ip4)), true
	}
	if len(ip) == net.IPv6len {
		return flow.RawAddr(flow.AddrFromSlice(ip)), true
	}
	return flow.RawAddr{}, false
}

func convertNfdump(r *nfdump.FlowRecordV3, f *nfdump.NfFile, rec *flow.Record) bool {
	g := r.GenericFlow()
	if g == nil || (!r.IsIPv4() && !r.IsIPv6()) {
		return false
	}
	ips := r.IP()
	src, ok1 := ipToRaw(ips.SrcIP)
	dst, ok2 := ipToRaw(ips.DstIP)
	if !ok1 || !ok2 {
		return false
	}
	rec.SrcAddr, rec.DstAddr = src, dst
	rec.TimeStartMs = int64(g.MsecFirst)
	rec.TimeEndMs = int64(g.MsecLast)
	rec.TimeReceivedMs = int64(g.MsecReceived)
	if rec.TimeEndMs < rec.TimeStartMs {
		rec.TimeEndMs = rec.TimeStartMs
	}
	rec.SrcPort, rec.DstPort = g.SrcPort, g.DstPort
	rec.Proto, rec.TCPFlags = g.Proto, g.TcpFlags
	rec.Bytes, rec.Packets = g.InBytes, g.InPackets
	if misc := r.FlowMisc(); misc != nil {
		rec.InIf, rec.OutIf = misc.Input, misc.Output
	}
	rec.SamplingRate = 1
	if pi, _ := r.SamplerInfo(f); pi > 1 {
		rec.SamplingRate = uint32(pi)
	}
	rec.Protocol = flow.ProtocolFile
	return true
}
