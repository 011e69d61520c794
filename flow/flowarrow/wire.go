package flowarrow

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math"
	"strconv"
	"sync"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/ipc"
)

// Wire versions: the value of the bus's ccflow-schema header and of the
// "ccflow.wire_version" schema metadata. They name the Arrow schema of a
// bus message, not the flow schema (SchemaVersion), which both carry.
const (
	// WireVersionFlowSchema is a stream of the flow schema itself
	// (Schema()), as written by Arrow's IPC writer. Encoders with Arrow
	// buffer compression write it; every Decoder reads it.
	WireVersionFlowSchema = 1
	// WireVersion is the compact wire schema (see the package
	// documentation and docs/bus.md): rows sorted by remote endpoint,
	// per-message dictionaries for addresses, pseudonyms and strings,
	// event times as offsets from a base, no batch_id column. Decoding
	// restores exactly the flow.Pseudo values (not their order) and the
	// batch ID.
	WireVersion = 2
)

// Wire schema metadata keys.
const (
	metaWireVersion = "ccflow.wire_version"
	metaBatchID     = "ccflow.batch_id"
	metaTimeBase    = "ccflow.time_base_ms"
)

// Wire column names (version 2). Columns that are not a transform of a
// flow schema column keep its name.
const (
	// WireColTimeStartOffset is time_start minus the stream's
	// ccflow.time_base_ms (uint32, or uint64 in the wide variant).
	WireColTimeStartOffset = "time_start_offset_ms"
	// WireColDuration is time_end minus time_start (int32, or int64 in
	// the wide variant).
	WireColDuration = "duration_ms"
)

// Wire column indexes (version 2).
const (
	wTimeStart = iota
	wDuration
	wExportProto
	wExporter
	wObsDomain
	wInIf
	wOutIf
	wKind
	wDirection
	wEpoch
	wSub
	wSubPort
	wPeer
	wPeerPort
	wRemote
	wRemotePort
	wTransitSrc
	wTransitSrcPort
	wProto
	wTCPFlags
	wBytes
	wPackets
	wSamplingRate
	wRemoteASN
	wASOrg
	wCountry
	wProvider
	wIntel
	wExporterName
	wInIfName
	wOutIfName
	wireColumns
)

// wireMaxRows is the most rows in one wire record batch: dictionary
// indices are int16. Longer inputs become several record batches in one
// stream, each after its own (replacement) dictionaries.
const wireMaxRows = 1 << 15

// wireKind is the physical layout of a wire column.
type wireKind uint8

const (
	wkPrim wireKind = iota // fixed-width values
	wkEnum                 // dictionary<int8, utf8> of fixed names
	wkAddr                 // dictionary<int16, fixed_size_binary[16]>
	wkStr                  // dictionary<int16, utf8>
)

type wireCol struct {
	name string
	kind wireKind
	// width is the byte width of the values (wkPrim) or of the indices,
	// narrow and wide variant.
	width, wideWidth int
	dictID           int64 // for dictionary columns
}

var (
	dictAddr16 = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int16, ValueType: addr16}
	dictStr16  = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int16, ValueType: arrow.BinaryTypes.String}
	dictEnum8  = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
)

// wireCols describes the wire columns; wireSchemas are the Arrow schemas
// of the narrow and wide variants.
var wireCols, wireSchemas = func() ([wireColumns]wireCol, [2]*arrow.Schema) {
	type def struct {
		name         string
		narrow, wide arrow.DataType
	}
	u8, u16, u32, u64 := arrow.PrimitiveTypes.Uint8, arrow.PrimitiveTypes.Uint16, arrow.PrimitiveTypes.Uint32, arrow.PrimitiveTypes.Uint64
	defs := [wireColumns]def{
		wTimeStart:      {WireColTimeStartOffset, u32, u64},
		wDuration:       {WireColDuration, arrow.PrimitiveTypes.Int32, arrow.PrimitiveTypes.Int64},
		wExportProto:    {ColExportProto, dictEnum8, nil},
		wExporter:       {ColExporter, dictAddr16, nil},
		wObsDomain:      {ColObsDomain, u32, nil},
		wInIf:           {ColInIf, u32, nil},
		wOutIf:          {ColOutIf, u32, nil},
		wKind:           {ColKind, dictEnum8, nil},
		wDirection:      {ColDirection, dictEnum8, nil},
		wEpoch:          {ColEpoch, u32, nil},
		wSub:            {ColSub, dictAddr16, nil},
		wSubPort:        {ColSubPort, u16, nil},
		wPeer:           {ColPeer, dictAddr16, nil},
		wPeerPort:       {ColPeerPort, u16, nil},
		wRemote:         {ColRemoteAddr, dictAddr16, nil},
		wRemotePort:     {ColRemotePort, u16, nil},
		wTransitSrc:     {ColTransitSrc, dictAddr16, nil},
		wTransitSrcPort: {ColTransitSrcPort, u16, nil},
		wProto:          {ColProto, u8, nil},
		wTCPFlags:       {ColTCPFlags, u8, nil},
		wBytes:          {ColBytes, u32, u64},
		wPackets:        {ColPackets, u32, u64},
		wSamplingRate:   {ColSamplingRate, u32, nil},
		wRemoteASN:      {ColRemoteASN, u32, nil},
		wASOrg:          {ColRemoteASOrg, dictStr16, nil},
		wCountry:        {ColRemoteCountry, dictStr16, nil},
		wProvider:       {ColRemoteProvider, dictStr16, nil},
		wIntel:          {ColIntel, dictStr16, nil},
		wExporterName:   {ColExporterName, dictStr16, nil},
		wInIfName:       {ColInIfName, dictStr16, nil},
		wOutIfName:      {ColOutIfName, dictStr16, nil},
	}
	var cols [wireColumns]wireCol
	var fields [2][]arrow.Field
	dictID := int64(0)
	for i, d := range defs {
		c := wireCol{name: d.name}
		switch d.narrow {
		case dictEnum8:
			c.kind, c.width = wkEnum, 1
		case dictAddr16:
			c.kind, c.width = wkAddr, 2
		case dictStr16:
			c.kind, c.width = wkStr, 2
		default:
			c.width = d.narrow.(arrow.FixedWidthDataType).BitWidth() / 8
		}
		c.wideWidth = c.width
		wide := d.narrow
		if d.wide != nil {
			wide = d.wide
			c.wideWidth = d.wide.(arrow.FixedWidthDataType).BitWidth() / 8
		}
		if c.kind != wkPrim {
			// Arrow numbers dictionaries in field order.
			c.dictID = dictID
			dictID++
		}
		cols[i] = c
		fields[0] = append(fields[0], arrow.Field{Name: d.name, Type: d.narrow})
		fields[1] = append(fields[1], arrow.Field{Name: d.name, Type: wide})
	}
	var schemas [2]*arrow.Schema
	for v := range schemas {
		md := arrow.NewMetadata(
			[]string{MetadataVersionKey, metaWireVersion, metaBatchID, metaTimeBase},
			[]string{strconv.Itoa(SchemaVersion), strconv.Itoa(WireVersion), batchIDPlaceholder, timeBasePlaceholder})
		schemas[v] = arrow.NewSchema(fields[v], &md)
	}
	return cols, schemas
}()

// The schema message of a wire stream is a template with two fixed-width
// holes in its metadata: the batch ID (32 hex digits) and the time base
// (20 characters: '-' or '0', then 19 decimal digits).
const (
	batchIDPlaceholder  = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
	timeBasePlaceholder = "TTTTTTTTTTTTTTTTTTTT"
)

// wireTemplate is the schema message of one wire variant and where its
// holes are.
type wireTemplate struct {
	msg          []byte
	idAt, timeAt int
	wide         bool
}

var wireTemplates = sync.OnceValue(func() *[2]wireTemplate {
	var out [2]wireTemplate
	for v, s := range wireSchemas {
		var buf bytes.Buffer
		w := ipc.NewWriter(&buf, ipc.WithSchema(s))
		if err := w.Close(); err != nil {
			panic(err)
		}
		b := buf.Bytes()
		n := 8 + int(binary.LittleEndian.Uint32(b[4:8]))
		t := wireTemplate{msg: append([]byte(nil), b[:n]...), wide: v == 1}
		t.idAt = bytes.Index(t.msg, []byte(batchIDPlaceholder))
		t.timeAt = bytes.Index(t.msg, []byte(timeBasePlaceholder))
		if t.idAt < 0 || t.timeAt < 0 {
			panic("flowarrow: wire schema placeholders not found")
		}
		out[v] = t
	}
	return &out
})

// putTimeBase writes v in the 20-character form of the time base hole.
func putTimeBase(dst []byte, v int64) {
	u := uint64(v)
	dst[0] = '0'
	if v < 0 {
		dst[0] = '-'
		u = -u
	}
	for i := 19; i >= 1; i-- {
		dst[i] = byte('0' + u%10)
		u /= 10
	}
}

// parseTimeBase reads the time base hole.
func parseTimeBase(b []byte) (int64, bool) {
	if len(b) != 20 || (b[0] != '0' && b[0] != '-') {
		return 0, false
	}
	var u uint64
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	if b[0] == '-' {
		if u > 1<<63 {
			return 0, false
		}
		return int64(-u), true
	}
	if u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// matchWireSchema reports which wire variant stream starts with and reads
// the batch ID and time base from its schema message.
func matchWireSchema(stream []byte) (t *wireTemplate, id [16]byte, base int64, rest []byte, err error) {
	ts := wireTemplates()
	for v := range ts {
		c := &ts[v]
		m := c.msg
		if len(stream) < len(m) {
			continue
		}
		s := stream[:len(m)]
		// Equal outside the holes.
		h1, l1, h2, l2 := c.idAt, 32, c.timeAt, 20
		if h2 < h1 {
			h1, l1, h2, l2 = h2, l2, h1, l1
		}
		if !bytes.Equal(s[:h1], m[:h1]) || !bytes.Equal(s[h1+l1:h2], m[h1+l1:h2]) || !bytes.Equal(s[h2+l2:], m[h2+l2:]) {
			continue
		}
		if _, err := hex.Decode(id[:], s[c.idAt:c.idAt+32]); err != nil {
			return nil, id, 0, nil, corruptf("bad batch id in wire schema")
		}
		base, ok := parseTimeBase(s[c.timeAt : c.timeAt+20])
		if !ok {
			return nil, id, 0, nil, corruptf("bad time base in wire schema")
		}
		return c, id, base, stream[len(m):], nil
	}
	return nil, id, 0, nil, ErrSchemaMismatch
}

// enumNamesOf returns the fixed dictionary of an enum wire column.
func enumNamesOf(col int) []string {
	switch col {
	case wExportProto:
		return protocolDict
	case wKind:
		return kindDict
	case wDirection:
		return directionDict
	}
	return nil
}
