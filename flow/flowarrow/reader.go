package flowarrow

import (
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/ccflow/ccflow/flow"
)

// CheckSchema reports whether s is the flow schema of this package: the
// same column names and types in the same order, and a version in the
// metadata, if any, equal to SchemaVersion. The bus uses it to refuse
// messages it cannot read faithfully.
func CheckSchema(s *arrow.Schema) error {
	if v, ok := s.Metadata().GetValue(MetadataVersionKey); ok && v != strconv.Itoa(SchemaVersion) {
		return fmt.Errorf("flow schema version %q, want %d", v, SchemaVersion)
	}
	if s.NumFields() != schema.NumFields() {
		return fmt.Errorf("flow schema has %d columns, want %d", s.NumFields(), schema.NumFields())
	}
	for i, f := range s.Fields() {
		want := schema.Field(i)
		if f.Name != want.Name || !arrow.TypeEqual(f.Type, want.Type) {
			return fmt.Errorf("flow schema column %d is %s %s, want %s %s", i, f.Name, f.Type, want.Name, want.Type)
		}
	}
	return nil
}

// AppendFlows appends the flows of rec to dst and returns the extended
// slice. Columns are found by name, so a record with fewer columns (a
// projection) or a different order also reads: a missing column leaves its
// field at the zero value. Besides the types of Schema(), string columns may
// be plain utf8/large_utf8 or dictionaries of them, addresses binary of 16
// bytes, and timestamps any unit (as Parquet readers may return). Strings
// are copied out of rec, so the flows stay valid after rec is released. A
// column of another type is an error; a schema version other than
// SchemaVersion too.
func AppendFlows(dst []flow.Pseudo, rec arrow.Record) ([]flow.Pseudo, error) {
	s := rec.Schema()
	if v, ok := s.Metadata().GetValue(MetadataVersionKey); ok && v != strconv.Itoa(SchemaVersion) {
		return dst, fmt.Errorf("flow schema version %q, want %d", v, SchemaVersion)
	}
	n := int(rec.NumRows())
	if err := checkLengths(rec); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, make([]flow.Pseudo, n)...)
	out := dst[start:]
	var p flow.Pseudo
	for i, f := range s.Fields() {
		col := rec.Column(i)
		if col.Len() != n {
			return dst[:start], fmt.Errorf("column %s has %d rows, want %d", f.Name, col.Len(), n)
		}
		var err error
		switch f.Name {
		case ColTimeStart:
			err = readTime(out, unsafe.Offsetof(p.TimeStartMs), col)
		case ColTimeEnd:
			err = readTime(out, unsafe.Offsetof(p.TimeEndMs), col)
		case ColExportProto:
			err = readEnum(out, unsafe.Offsetof(p.Protocol), col, protocolDict)
		case ColKind:
			err = readEnum(out, unsafe.Offsetof(p.Kind), col, kindDict)
		case ColDirection:
			err = readEnum(out, unsafe.Offsetof(p.Direction), col, directionDict)
		case ColExporter:
			err = read16(out, unsafe.Offsetof(p.Exporter), col)
		case ColSub:
			err = read16(out, unsafe.Offsetof(p.Sub), col)
		case ColPeer:
			err = read16(out, unsafe.Offsetof(p.Peer), col)
		case ColRemoteAddr:
			err = read16(out, unsafe.Offsetof(p.Remote), col)
		case ColTransitSrc:
			err = read16(out, unsafe.Offsetof(p.TransitSrc), col)
		case ColObsDomain:
			err = readPrim[uint32](out, unsafe.Offsetof(p.ObsDomain), col)
		case ColInIf:
			err = readPrim[uint32](out, unsafe.Offsetof(p.InIf), col)
		case ColOutIf:
			err = readPrim[uint32](out, unsafe.Offsetof(p.OutIf), col)
		case ColEpoch:
			err = readPrim[uint32](out, unsafe.Offsetof(p.Epoch), col)
		case ColSamplingRate:
			err = readPrim[uint32](out, unsafe.Offsetof(p.SamplingRate), col)
		case ColRemoteASN:
			err = readPrim[uint32](out, unsafe.Offsetof(p.RemoteASN), col)
		case ColSubPort:
			err = readPrim[uint16](out, unsafe.Offsetof(p.SubPort), col)
		case ColPeerPort:
			err = readPrim[uint16](out, unsafe.Offsetof(p.PeerPort), col)
		case ColRemotePort:
			err = readPrim[uint16](out, unsafe.Offsetof(p.RemotePort), col)
		case ColTransitSrcPort:
			err = readPrim[uint16](out, unsafe.Offsetof(p.TransitSrcPort), col)
		case ColProto:
			err = readPrim[uint8](out, unsafe.Offsetof(p.Proto), col)
		case ColTCPFlags:
			err = readPrim[uint8](out, unsafe.Offsetof(p.TCPFlags), col)
		case ColBytes:
			err = readPrim[uint64](out, unsafe.Offsetof(p.Bytes), col)
		case ColPackets:
			err = readPrim[uint64](out, unsafe.Offsetof(p.Packets), col)
		case ColRemoteASOrg:
			err = readString(out, unsafe.Offsetof(p.RemoteASOrg), col)
		case ColRemoteCountry:
			err = readString(out, unsafe.Offsetof(p.RemoteCountry), col)
		case ColRemoteProvider:
			err = readString(out, unsafe.Offsetof(p.Provider), col)
		case ColIntel:
			err = readString(out, unsafe.Offsetof(p.Intel), col)
		case ColExporterName:
			err = readString(out, unsafe.Offsetof(p.ExporterName), col)
		case ColInIfName:
			err = readString(out, unsafe.Offsetof(p.InIfName), col)
		case ColOutIfName:
			err = readString(out, unsafe.Offsetof(p.OutIfName), col)
		}
		if err != nil {
			return dst[:start], fmt.Errorf("column %s: %w", f.Name, err)
		}
	}
	return dst, nil
}

// checkLengths checks that every column has NumRows values and that the
// buffers really hold them, before anything is allocated for the rows: the
// row count of a record read from a stream is untrusted.
func checkLengths(rec arrow.Record) error {
	n := int(rec.NumRows())
	if n < 0 {
		return fmt.Errorf("negative row count")
	}
	for i, f := range rec.Schema().Fields() {
		col := rec.Column(i)
		if col.Len() != n {
			return fmt.Errorf("column %s has %d rows, want %d", f.Name, col.Len(), n)
		}
		if n == 0 {
			continue
		}
		data := col.Data()
		if d, ok := col.(*array.Dictionary); ok {
			data = d.Indices().Data()
		}
		bufs := data.Buffers()
		need := 0
		switch t := data.DataType().(type) {
		case arrow.FixedWidthDataType:
			need = (n*t.BitWidth() + 7) / 8
		case *arrow.StringType, *arrow.BinaryType:
			need = (n + 1) * 4
		case *arrow.LargeStringType, *arrow.LargeBinaryType:
			need = (n + 1) * 8
		default:
			continue
		}
		if len(bufs) < 2 || bufs[1] == nil || bufs[1].Len() < need {
			return fmt.Errorf("column %s: buffer too short for %d rows", f.Name, n)
		}
	}
	return nil
}

// AppendBatchIDs appends the batch_id column of rec to dst (zero IDs when
// the column is missing) and returns the extended slice.
func AppendBatchIDs(dst []flow.BatchID, rec arrow.Record) ([]flow.BatchID, error) {
	n := int(rec.NumRows())
	if err := checkLengths(rec); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, make([]flow.BatchID, n)...)
	idx := rec.Schema().FieldIndices(ColBatchID)
	if len(idx) == 0 {
		return dst, nil
	}
	col := rec.Column(idx[0])
	if col.Len() != n {
		return dst[:start], fmt.Errorf("column %s has %d rows, want %d", ColBatchID, col.Len(), n)
	}
	out := dst[start:]
	get, err := bytes16(col)
	if err != nil {
		return dst[:start], fmt.Errorf("column %s: %w", ColBatchID, err)
	}
	for i := range out {
		copy(out[i][:], get(i))
	}
	return dst, nil
}

// field returns a pointer to the field at offset off of f.
func field[T any](f *flow.Pseudo, off uintptr) *T {
	return (*T)(unsafe.Add(unsafe.Pointer(f), off))
}

type primitive interface {
	uint8 | uint16 | uint32 | uint64
}

func readPrim[T primitive](out []flow.Pseudo, off uintptr, col arrow.Array) error {
	var vals []T
	switch a := col.(type) {
	case *array.Uint8:
		v, ok := any(a.Uint8Values()).([]T)
		if !ok {
			return fmt.Errorf("unexpected type %s", col.DataType())
		}
		vals = v
	case *array.Uint16:
		v, ok := any(a.Uint16Values()).([]T)
		if !ok {
			return fmt.Errorf("unexpected type %s", col.DataType())
		}
		vals = v
	case *array.Uint32:
		v, ok := any(a.Uint32Values()).([]T)
		if !ok {
			return fmt.Errorf("unexpected type %s", col.DataType())
		}
		vals = v
	case *array.Uint64:
		v, ok := any(a.Uint64Values()).([]T)
		if !ok {
			return fmt.Errorf("unexpected type %s", col.DataType())
		}
		vals = v
	default:
		return fmt.Errorf("unexpected type %s", col.DataType())
	}
	if len(vals) < len(out) {
		return fmt.Errorf("short values buffer")
	}
	for i := range out {
		*field[T](&out[i], off) = vals[i]
	}
	return nil
}

func readTime(out []flow.Pseudo, off uintptr, col arrow.Array) error {
	switch a := col.(type) {
	case *array.Timestamp:
		vals := a.TimestampValues()
		if len(vals) < len(out) {
			return fmt.Errorf("short values buffer")
		}
		unit := a.DataType().(*arrow.TimestampType).Unit
		for i := range out {
			*field[int64](&out[i], off) = toMillis(int64(vals[i]), unit)
		}
	case *array.Int64:
		vals := a.Int64Values()
		if len(vals) < len(out) {
			return fmt.Errorf("short values buffer")
		}
		for i := range out {
			*field[int64](&out[i], off) = vals[i]
		}
	default:
		return fmt.Errorf("unexpected type %s", col.DataType())
	}
	return nil
}

func toMillis(v int64, u arrow.TimeUnit) int64 {
	switch u {
	case arrow.Second:
		return v * 1000
	case arrow.Microsecond:
		return v / 1000
	case arrow.Nanosecond:
		return v / 1_000_000
	}
	return v
}

// bytes16 returns an accessor for a column of 16-byte values.
func bytes16(col arrow.Array) (func(int) []byte, error) {
	switch a := col.(type) {
	case *array.FixedSizeBinary:
		if w := a.DataType().(*arrow.FixedSizeBinaryType).ByteWidth; w != 16 {
			return nil, fmt.Errorf("fixed_size_binary[%d], want 16 bytes", w)
		}
		return a.Value, nil
	case *array.Binary:
		for i := 0; i < a.Len(); i++ {
			if l := a.ValueLen(i); l != 16 && l != 0 {
				return nil, fmt.Errorf("row %d has %d bytes, want 16", i, l)
			}
		}
		return a.Value, nil
	}
	return nil, fmt.Errorf("unexpected type %s", col.DataType())
}

func read16(out []flow.Pseudo, off uintptr, col arrow.Array) error {
	get, err := bytes16(col)
	if err != nil {
		return err
	}
	for i := range out {
		copy(field[[16]byte](&out[i], off)[:], get(i))
	}
	return nil
}

// stringValues returns the values of a string column as (dictionary,
// index-of-row) or, for plain strings, a per-row accessor. Strings are
// copied out of Arrow memory, once per distinct dictionary value.
func stringValues(col arrow.Array) (func(int) string, error) {
	switch a := col.(type) {
	case *array.Dictionary:
		var vals []string
		switch d := a.Dictionary().(type) {
		case *array.String:
			vals = make([]string, d.Len())
			for i := range vals {
				vals[i] = strings.Clone(d.Value(i))
			}
		case *array.LargeString:
			vals = make([]string, d.Len())
			for i := range vals {
				vals[i] = strings.Clone(d.Value(i))
			}
		case *array.Binary:
			vals = make([]string, d.Len())
			for i := range vals {
				vals[i] = string(d.Value(i))
			}
		default:
			return nil, fmt.Errorf("unexpected dictionary type %s", a.Dictionary().DataType())
		}
		if idx, ok := a.Indices().(*array.Int32); ok {
			raw := idx.Int32Values()
			return func(i int) string {
				if j := raw[i]; j >= 0 && int(j) < len(vals) {
					return vals[j]
				}
				return ""
			}, nil
		}
		return func(i int) string {
			if a.IsNull(i) {
				return ""
			}
			if j := a.GetValueIndex(i); j >= 0 && j < len(vals) {
				return vals[j]
			}
			return ""
		}, nil
	case *array.String:
		intern := map[string]string{}
		return func(i int) string { return internString(intern, a.Value(i)) }, nil
	case *array.LargeString:
		intern := map[string]string{}
		return func(i int) string { return internString(intern, a.Value(i)) }, nil
	}
	return nil, fmt.Errorf("unexpected type %s", col.DataType())
}

// internString returns a copy of s that is shared by equal values, so a
// column with few distinct values costs few allocations.
func internString(m map[string]string, s string) string {
	if s == "" {
		return ""
	}
	if v, ok := m[s]; ok {
		return v
	}
	v := strings.Clone(s)
	m[v] = v
	return v
}

func readString(out []flow.Pseudo, off uintptr, col arrow.Array) error {
	get, err := stringValues(col)
	if err != nil {
		return err
	}
	for i := range out {
		*field[string](&out[i], off) = get(i)
	}
	return nil
}

func readEnum(out []flow.Pseudo, off uintptr, col arrow.Array, names []string) error {
	get, err := stringValues(col)
	if err != nil {
		return err
	}
	for i := range out {
		v := get(i)
		var e uint8
		for j, n := range names {
			if n == v {
				e = uint8(j)
				break
			}
		}
		*field[uint8](&out[i], off) = e
	}
	return nil
}
