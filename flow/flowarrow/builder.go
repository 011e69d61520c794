package flowarrow

import (
	"unsafe"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/memory"
	"github.com/ccflow/ccflow/flow"
)

// Builder accumulates flows column by column and turns them into an Arrow
// record of Schema().
//
// A Builder reuses its memory: its column buffers grow to the largest batch
// seen and are then reused by every batch after Reset. The record returned
// by Record shares that memory (no copy), so it is valid only until the next
// Reset or Append: write or encode it first, then Reset. A Builder is not
// safe for concurrent use.
type Builder struct {
	n int

	timeStart, timeEnd []int64
	addrs              [5][][16]byte // exporter, sub, peer, remote_addr, transit_src
	batchID            [][16]byte
	u32                [6][]uint32 // obs_domain, in_if, out_if, epoch, sampling_rate, remote_asn
	u16                [4][]uint16 // sub_port, peer_port, remote_port, transit_src_port
	proto, tcpFlags    []uint8
	bytes, packets     []uint64
	protocol, kind     []int32
	direction          []int32
	strs               [6]dictColumn // remote_as_org, remote_country, remote_provider, exporter_name, in_if_name, out_if_name
	intelOff           []int32
	intelData          []byte
}

// Indexes into Builder.addrs, u32, u16 and strs.
const (
	aExporter = iota
	aSub
	aPeer
	aRemote
	aTransitSrc
)

const (
	uObsDomain = iota
	uInIf
	uOutIf
	uEpoch
	uSamplingRate
	uRemoteASN
)

const (
	pSubPort = iota
	pPeerPort
	pRemotePort
	pTransitSrcPort
)

const (
	sASOrg = iota
	sCountry
	sProvider
	sExporterName
	sInIfName
	sOutIfName
)

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	b := &Builder{}
	for i := range b.strs {
		b.strs[i].index = map[string]int32{}
	}
	b.Reset()
	return b
}

// Len returns the number of flows appended since the last Reset.
func (b *Builder) Len() int { return b.n }

// Reset empties the builder and keeps its memory for the next batch. Records
// returned by Record before must no longer be used.
func (b *Builder) Reset() {
	b.n = 0
	b.timeStart, b.timeEnd = b.timeStart[:0], b.timeEnd[:0]
	for i := range b.addrs {
		b.addrs[i] = b.addrs[i][:0]
	}
	b.batchID = b.batchID[:0]
	for i := range b.u32 {
		b.u32[i] = b.u32[i][:0]
	}
	for i := range b.u16 {
		b.u16[i] = b.u16[i][:0]
	}
	b.proto, b.tcpFlags = b.proto[:0], b.tcpFlags[:0]
	b.bytes, b.packets = b.bytes[:0], b.packets[:0]
	b.protocol, b.kind, b.direction = b.protocol[:0], b.kind[:0], b.direction[:0]
	for i := range b.strs {
		b.strs[i].reset()
	}
	b.intelOff = append(b.intelOff[:0], 0)
	b.intelData = b.intelData[:0]
}

// Append adds one flow that travels in batch id.
func (b *Builder) Append(id flow.BatchID, f *flow.Pseudo) {
	b.n++
	b.timeStart = append(b.timeStart, f.TimeStartMs)
	b.timeEnd = append(b.timeEnd, f.TimeEndMs)
	b.addrs[aExporter] = append(b.addrs[aExporter], f.Exporter)
	b.addrs[aSub] = append(b.addrs[aSub], f.Sub)
	b.addrs[aPeer] = append(b.addrs[aPeer], f.Peer)
	b.addrs[aRemote] = append(b.addrs[aRemote], f.Remote)
	b.addrs[aTransitSrc] = append(b.addrs[aTransitSrc], f.TransitSrc)
	b.batchID = append(b.batchID, id)
	b.u32[uObsDomain] = append(b.u32[uObsDomain], f.ObsDomain)
	b.u32[uInIf] = append(b.u32[uInIf], f.InIf)
	b.u32[uOutIf] = append(b.u32[uOutIf], f.OutIf)
	b.u32[uEpoch] = append(b.u32[uEpoch], f.Epoch)
	b.u32[uSamplingRate] = append(b.u32[uSamplingRate], f.SamplingRate)
	b.u32[uRemoteASN] = append(b.u32[uRemoteASN], f.RemoteASN)
	b.u16[pSubPort] = append(b.u16[pSubPort], f.SubPort)
	b.u16[pPeerPort] = append(b.u16[pPeerPort], f.PeerPort)
	b.u16[pRemotePort] = append(b.u16[pRemotePort], f.RemotePort)
	b.u16[pTransitSrcPort] = append(b.u16[pTransitSrcPort], f.TransitSrcPort)
	b.proto = append(b.proto, f.Proto)
	b.tcpFlags = append(b.tcpFlags, f.TCPFlags)
	b.bytes = append(b.bytes, f.Bytes)
	b.packets = append(b.packets, f.Packets)
	b.protocol = append(b.protocol, enumIndex(int(f.Protocol), len(protocolDict)))
	b.kind = append(b.kind, enumIndex(int(f.Kind), len(kindDict)))
	b.direction = append(b.direction, enumIndex(int(f.Direction), len(directionDict)))
	b.strs[sASOrg].append(f.RemoteASOrg)
	b.strs[sCountry].append(f.RemoteCountry)
	b.strs[sProvider].append(f.Provider)
	b.strs[sExporterName].append(f.ExporterName)
	b.strs[sInIfName].append(f.InIfName)
	b.strs[sOutIfName].append(f.OutIfName)
	b.intelData = append(b.intelData, f.Intel...)
	b.intelOff = append(b.intelOff, int32(len(b.intelData)))
}

// AppendBatch adds every flow of batch.
func (b *Builder) AppendBatch(batch flow.Batch) {
	for i := range batch.Flows {
		b.Append(batch.ID, &batch.Flows[i])
	}
}

func enumIndex(v, n int) int32 {
	if v < 0 || v >= n {
		return 0 // "unknown"
	}
	return int32(v)
}

// Record returns the flows appended since the last Reset as a record of
// Schema(). The record shares the builder's memory: it is valid until the
// next Reset or Append (Retain does not extend that). The caller should
// Release it when done, as with any Arrow record.
func (b *Builder) Record() arrow.Record {
	n := b.n
	cols := make([]arrow.Array, numColumns)
	cols[iTimeStart] = fixedArray(tsMs, n, sliceBytes(b.timeStart))
	cols[iTimeEnd] = fixedArray(tsMs, n, sliceBytes(b.timeEnd))
	cols[iExportProto] = enumArray(n, b.protocol, protocolDict)
	cols[iExporter] = fixedArray(addr16, n, sliceBytes(b.addrs[aExporter]))
	cols[iObsDomain] = fixedArray(arrow.PrimitiveTypes.Uint32, n, sliceBytes(b.u32[uObsDomain]))
	cols[iInIf] = fixedArray(arrow.PrimitiveTypes.Uint32, n, sliceBytes(b.u32[uInIf]))
	cols[iOutIf] = fixedArray(arrow.PrimitiveTypes.Uint32, n, sliceBytes(b.u32[uOutIf]))
	cols[iKind] = enumArray(n, b.kind, kindDict)
	cols[iDirection] = enumArray(n, b.direction, directionDict)
	cols[iEpoch] = fixedArray(arrow.PrimitiveTypes.Uint32, n, sliceBytes(b.u32[uEpoch]))
	cols[iSub] = fixedArray(addr16, n, sliceBytes(b.addrs[aSub]))
	cols[iSubPort] = fixedArray(arrow.PrimitiveTypes.Uint16, n, sliceBytes(b.u16[pSubPort]))
	cols[iPeer] = fixedArray(addr16, n, sliceBytes(b.addrs[aPeer]))
	cols[iPeerPort] = fixedArray(arrow.PrimitiveTypes.Uint16, n, sliceBytes(b.u16[pPeerPort]))
	cols[iRemoteAddr] = fixedArray(addr16, n, sliceBytes(b.addrs[aRemote]))
	cols[iRemotePort] = fixedArray(arrow.PrimitiveTypes.Uint16, n, sliceBytes(b.u16[pRemotePort]))
	cols[iTransitSrc] = fixedArray(addr16, n, sliceBytes(b.addrs[aTransitSrc]))
	cols[iTransitSrcPort] = fixedArray(arrow.PrimitiveTypes.Uint16, n, sliceBytes(b.u16[pTransitSrcPort]))
	cols[iProto] = fixedArray(arrow.PrimitiveTypes.Uint8, n, b.proto)
	cols[iTCPFlags] = fixedArray(arrow.PrimitiveTypes.Uint8, n, b.tcpFlags)
	cols[iBytes] = fixedArray(arrow.PrimitiveTypes.Uint64, n, sliceBytes(b.bytes))
	cols[iPackets] = fixedArray(arrow.PrimitiveTypes.Uint64, n, sliceBytes(b.packets))
	cols[iSamplingRate] = fixedArray(arrow.PrimitiveTypes.Uint32, n, sliceBytes(b.u32[uSamplingRate]))
	cols[iRemoteASN] = fixedArray(arrow.PrimitiveTypes.Uint32, n, sliceBytes(b.u32[uRemoteASN]))
	cols[iRemoteASOrg] = b.strs[sASOrg].array(n)
	cols[iRemoteCountry] = b.strs[sCountry].array(n)
	cols[iRemoteProvider] = b.strs[sProvider].array(n)
	cols[iIntel] = stringArray(n, b.intelOff, b.intelData)
	cols[iExporterName] = b.strs[sExporterName].array(n)
	cols[iInIfName] = b.strs[sInIfName].array(n)
	cols[iOutIfName] = b.strs[sOutIfName].array(n)
	cols[iBatchID] = fixedArray(addr16, n, sliceBytes(b.batchID))
	rec := array.NewRecord(schema, cols, int64(n))
	for _, c := range cols {
		c.Release()
	}
	return rec
}

// sliceBytes views a slice of fixed-size values as bytes (no copy).
func sliceBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(zero)))
}

func fixedArray(t arrow.DataType, n int, values []byte) arrow.Array {
	data := array.NewData(t, n, []*memory.Buffer{nil, memory.NewBufferBytes(values)}, nil, 0, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

func stringArray(n int, offsets []int32, values []byte) arrow.Array {
	data := array.NewData(arrow.BinaryTypes.String, n, []*memory.Buffer{nil, memory.NewBufferBytes(sliceBytes(offsets)), memory.NewBufferBytes(values)}, nil, 0, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

func dictArray(n int, indices []int32, values []string) arrow.Array {
	var offs []int32
	var data []byte
	offs = append(offs, 0)
	for _, v := range values {
		data = append(data, v...)
		offs = append(offs, int32(len(data)))
	}
	dict := stringArray(len(values), offs, data)
	defer dict.Release()
	idx := fixedArray(arrow.PrimitiveTypes.Int32, n, sliceBytes(indices))
	defer idx.Release()
	return array.NewDictionaryArray(dictString, idx, dict)
}

func enumArray(n int, indices []int32, names []string) arrow.Array {
	return dictArray(n, indices, names)
}

// dictColumn dictionary-encodes one string column.
type dictColumn struct {
	indices []int32
	values  []string
	index   map[string]int32
	last    string
	lastIdx int32
}

func (d *dictColumn) reset() {
	d.indices = d.indices[:0]
	d.values = d.values[:0]
	clear(d.index)
	d.last, d.lastIdx = "", -1
}

func (d *dictColumn) append(s string) {
	if d.lastIdx >= 0 && s == d.last {
		d.indices = append(d.indices, d.lastIdx)
		return
	}
	i, ok := d.index[s]
	if !ok {
		i = int32(len(d.values))
		d.values = append(d.values, s)
		d.index[s] = i
	}
	d.last, d.lastIdx = s, i
	d.indices = append(d.indices, i)
}

func (d *dictColumn) array(n int) arrow.Array { return dictArray(n, d.indices, d.values) }
