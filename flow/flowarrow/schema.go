// Package flowarrow is the Arrow form of pseudonymized flows (flow.Pseudo):
// the schema of docs/schema.md, a Builder that turns flows into Arrow
// records while reusing its memory, readers that turn records back into
// flows, and an Encoder/Decoder pair for the Arrow IPC streams the bus
// carries.
//
// The bus's default stream is the compact wire schema (WireVersion 2, see
// wire.go and docs/bus.md): the same flows with reversible per-message
// transforms (rows sorted by remote endpoint, dictionaries for addresses,
// pseudonyms and strings, event times as offsets, the batch ID in the
// schema metadata), written and read by code of this package that knows
// the schema, inside one zstd frame. It is valid Arrow IPC that any Arrow
// reader opens. Streams of the flow schema itself (WireVersionFlowSchema,
// with Arrow buffer compression) are written and read with Arrow's IPC
// writer and reader. The decoder checks every length of a stream against
// the bytes present before anything is allocated from it.
//
// The column names and types are the ones of docs/schema.md, shared with the
// Parquet and ClickHouse sinks. Every column is non-nullable: the zero value
// of a field (0, the zero address, the empty string) means "not known", as it
// does in flow.Pseudo. The schema has a version (SchemaVersion), carried in
// the schema metadata and, on the bus, in a Kafka header; a reader refuses a
// version it does not know.
//
// The package depends only on flow and Arrow; it performs no I/O.
package flowarrow

import (
	"strconv"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/ccflow/ccflow/flow"
)

// SchemaVersion is the version of the flow schema. It changes whenever a
// column is added, removed, renamed or changes type.
const SchemaVersion = 1

// MetadataVersionKey is the schema metadata key holding SchemaVersion.
const MetadataVersionKey = "ccflow.schema_version"

// Column names, in schema order. They are the names of docs/schema.md.
const (
	// ColTimeStart is the first packet time (timestamp[ms, UTC]); Pseudo.TimeStartMs.
	ColTimeStart = "time_start"
	// ColTimeEnd is the last packet time (timestamp[ms, UTC]); Pseudo.TimeEndMs.
	ColTimeEnd = "time_end"
	// ColExportProto is the export protocol (dictionary<utf8>: netflow5,
	// netflow9, ipfix, sflow5, file, unknown); Pseudo.Protocol.
	ColExportProto = "export_proto"
	// ColExporter is the router address (fixed_size_binary[16],
	// IPv4-mapped); Pseudo.Exporter.
	ColExporter = "exporter"
	// ColObsDomain is the observation domain / source ID (uint32); Pseudo.ObsDomain.
	ColObsDomain = "obs_domain"
	// ColInIf is the input interface after minimization (uint32); Pseudo.InIf.
	ColInIf = "in_if"
	// ColOutIf is the output interface after minimization (uint32); Pseudo.OutIf.
	ColOutIf = "out_if"
	// ColKind says which sides are subscribers (dictionary<utf8>:
	// subscriber, both, transit, unknown); Pseudo.Kind.
	ColKind = "kind"
	// ColDirection is the direction relative to the subscriber
	// (dictionary<utf8>: outbound, inbound, unknown); Pseudo.Direction.
	ColDirection = "direction"
	// ColEpoch is the key epoch of sub and peer (uint32); Pseudo.Epoch.
	ColEpoch = "epoch"
	// ColSub is the subscriber pseudonym (fixed_size_binary[16]); Pseudo.Sub.
	ColSub = "sub"
	// ColSubPort is the subscriber port (uint16); Pseudo.SubPort.
	ColSubPort = "sub_port"
	// ColPeer is the second subscriber's pseudonym, kind both
	// (fixed_size_binary[16]); Pseudo.Peer.
	ColPeer = "peer"
	// ColPeerPort is the second subscriber's port (uint16); Pseudo.PeerPort.
	ColPeerPort = "peer_port"
	// ColRemoteAddr is the remote endpoint in the clear
	// (fixed_size_binary[16], IPv4-mapped); Pseudo.Remote.
	ColRemoteAddr = "remote_addr"
	// ColRemotePort is the remote port (uint16); Pseudo.RemotePort.
	ColRemotePort = "remote_port"
	// ColTransitSrc is the source of a transit flow (fixed_size_binary[16],
	// IPv4-mapped); Pseudo.TransitSrc.
	ColTransitSrc = "transit_src"
	// ColTransitSrcPort is the transit source port (uint16); Pseudo.TransitSrcPort.
	ColTransitSrcPort = "transit_src_port"
	// ColProto is the IP protocol number (uint8); Pseudo.Proto.
	ColProto = "proto"
	// ColTCPFlags is the OR of TCP flags (uint8); Pseudo.TCPFlags.
	ColTCPFlags = "tcp_flags"
	// ColBytes is the byte count as exported (uint64); Pseudo.Bytes.
	ColBytes = "bytes"
	// ColPackets is the packet count as exported (uint64); Pseudo.Packets.
	ColPackets = "packets"
	// ColSamplingRate is the 1:N sampling, 0 unknown, 1 none (uint32);
	// Pseudo.SamplingRate.
	ColSamplingRate = "sampling_rate"
	// ColRemoteASN is the AS number of the remote side (uint32); Pseudo.RemoteASN.
	ColRemoteASN = "remote_asn"
	// ColRemoteASOrg is the AS organization (dictionary<utf8>); Pseudo.RemoteASOrg.
	ColRemoteASOrg = "remote_as_org"
	// ColRemoteCountry is the ISO country code (dictionary<utf8>); Pseudo.RemoteCountry.
	ColRemoteCountry = "remote_country"
	// ColRemoteProvider is the provider class (dictionary<utf8>); Pseudo.Provider.
	ColRemoteProvider = "remote_provider"
	// ColIntel holds comma-separated intel list names (utf8); Pseudo.Intel.
	ColIntel = "intel"
	// ColExporterName is the configured exporter name (dictionary<utf8>);
	// Pseudo.ExporterName.
	ColExporterName = "exporter_name"
	// ColInIfName is the configured input interface name
	// (dictionary<utf8>); Pseudo.InIfName.
	ColInIfName = "in_if_name"
	// ColOutIfName is the configured output interface name
	// (dictionary<utf8>); Pseudo.OutIfName.
	ColOutIfName = "out_if_name"
	// ColBatchID is the batch the flow travelled in (fixed_size_binary[16]);
	// flow.Batch.ID. Stages that may see a batch twice drop duplicates by it.
	ColBatchID = "batch_id"
)

// Column indexes in the schema, in docs/schema.md order.
const (
	iTimeStart = iota
	iTimeEnd
	iExportProto
	iExporter
	iObsDomain
	iInIf
	iOutIf
	iKind
	iDirection
	iEpoch
	iSub
	iSubPort
	iPeer
	iPeerPort
	iRemoteAddr
	iRemotePort
	iTransitSrc
	iTransitSrcPort
	iProto
	iTCPFlags
	iBytes
	iPackets
	iSamplingRate
	iRemoteASN
	iRemoteASOrg
	iRemoteCountry
	iRemoteProvider
	iIntel
	iExporterName
	iInIfName
	iOutIfName
	iBatchID
	numColumns
)

var (
	// dictString is the type of the dictionary-encoded string columns
	// (LowCardinality(String) in ClickHouse).
	dictString = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}
	// addr16 is the type of addresses, pseudonyms and batch IDs.
	addr16 = &arrow.FixedSizeBinaryType{ByteWidth: 16}
	tsMs   = arrow.FixedWidthTypes.Timestamp_ms

	schema = arrow.NewSchema([]arrow.Field{
		iTimeStart:      {Name: ColTimeStart, Type: tsMs},
		iTimeEnd:        {Name: ColTimeEnd, Type: tsMs},
		iExportProto:    {Name: ColExportProto, Type: dictString},
		iExporter:       {Name: ColExporter, Type: addr16},
		iObsDomain:      {Name: ColObsDomain, Type: arrow.PrimitiveTypes.Uint32},
		iInIf:           {Name: ColInIf, Type: arrow.PrimitiveTypes.Uint32},
		iOutIf:          {Name: ColOutIf, Type: arrow.PrimitiveTypes.Uint32},
		iKind:           {Name: ColKind, Type: dictString},
		iDirection:      {Name: ColDirection, Type: dictString},
		iEpoch:          {Name: ColEpoch, Type: arrow.PrimitiveTypes.Uint32},
		iSub:            {Name: ColSub, Type: addr16},
		iSubPort:        {Name: ColSubPort, Type: arrow.PrimitiveTypes.Uint16},
		iPeer:           {Name: ColPeer, Type: addr16},
		iPeerPort:       {Name: ColPeerPort, Type: arrow.PrimitiveTypes.Uint16},
		iRemoteAddr:     {Name: ColRemoteAddr, Type: addr16},
		iRemotePort:     {Name: ColRemotePort, Type: arrow.PrimitiveTypes.Uint16},
		iTransitSrc:     {Name: ColTransitSrc, Type: addr16},
		iTransitSrcPort: {Name: ColTransitSrcPort, Type: arrow.PrimitiveTypes.Uint16},
		iProto:          {Name: ColProto, Type: arrow.PrimitiveTypes.Uint8},
		iTCPFlags:       {Name: ColTCPFlags, Type: arrow.PrimitiveTypes.Uint8},
		iBytes:          {Name: ColBytes, Type: arrow.PrimitiveTypes.Uint64},
		iPackets:        {Name: ColPackets, Type: arrow.PrimitiveTypes.Uint64},
		iSamplingRate:   {Name: ColSamplingRate, Type: arrow.PrimitiveTypes.Uint32},
		iRemoteASN:      {Name: ColRemoteASN, Type: arrow.PrimitiveTypes.Uint32},
		iRemoteASOrg:    {Name: ColRemoteASOrg, Type: dictString},
		iRemoteCountry:  {Name: ColRemoteCountry, Type: dictString},
		iRemoteProvider: {Name: ColRemoteProvider, Type: dictString},
		iIntel:          {Name: ColIntel, Type: arrow.BinaryTypes.String},
		iExporterName:   {Name: ColExporterName, Type: dictString},
		iInIfName:       {Name: ColInIfName, Type: dictString},
		iOutIfName:      {Name: ColOutIfName, Type: dictString},
		iBatchID:        {Name: ColBatchID, Type: addr16},
	}, func() *arrow.Metadata {
		m := arrow.NewMetadata([]string{MetadataVersionKey}, []string{strconv.Itoa(SchemaVersion)})
		return &m
	}())
)

// Schema returns the Arrow schema of pseudonymized flows (version
// SchemaVersion). The returned schema is shared and must not be modified.
func Schema() *arrow.Schema { return schema }

// Enum dictionaries: the index of a value is the enum's numeric value, so
// building these columns needs no lookup.
var (
	protocolDict  = enumNames(6, func(i int) string { return flow.Protocol(i).String() })
	kindDict      = enumNames(4, func(i int) string { return flow.Kind(i).String() })
	directionDict = enumNames(3, func(i int) string { return flow.Dir(i).String() })
)

func enumNames(n int, name func(int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = name(i)
	}
	return out
}
