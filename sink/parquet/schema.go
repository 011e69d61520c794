package parquet

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/memory"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/sink/table"
)

var (
	tsMs   = &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}
	addr16 = &arrow.FixedSizeBinaryType{ByteWidth: 16}
)

// arrowType maps a ClickHouse column type of package table to the Arrow
// type of the Parquet files: the types ClickHouse reads back as that
// ClickHouse type.
func arrowType(ch string) (arrow.DataType, error) {
	switch ch {
	case "DateTime64(3, 'UTC')":
		return tsMs, nil
	case "IPv6", "FixedString(16)":
		return addr16, nil
	case "UInt8":
		return arrow.PrimitiveTypes.Uint8, nil
	case "UInt16":
		return arrow.PrimitiveTypes.Uint16, nil
	case "UInt32":
		return arrow.PrimitiveTypes.Uint32, nil
	case "UInt64":
		return arrow.PrimitiveTypes.Uint64, nil
	case "Int64":
		return arrow.PrimitiveTypes.Int64, nil
	case "Float64":
		return arrow.PrimitiveTypes.Float64, nil
	case "String", "LowCardinality(String)":
		return arrow.BinaryTypes.String, nil
	case "Array(LowCardinality(String))", "Array(String)":
		return arrow.ListOf(arrow.BinaryTypes.String), nil
	}
	return nil, fmt.Errorf("no Arrow type for ClickHouse type %s", ch)
}

// Schema returns the Arrow schema of a table's Parquet files: for flows the
// schema of package flowarrow, for the others the columns of package table.
func Schema(tbl string) (*arrow.Schema, error) {
	if tbl == table.Flows {
		return flowarrow.Schema(), nil
	}
	cols, ok := table.Columns[tbl]
	if !ok {
		return nil, fmt.Errorf("unknown table %q", tbl)
	}
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		t, err := arrowType(c.Type)
		if err != nil {
			return nil, fmt.Errorf("table %s column %s: %w", tbl, c.Name, err)
		}
		fields[i] = arrow.Field{Name: c.Name, Type: t}
	}
	return arrow.NewSchema(fields, nil), nil
}

// rowGroups accumulates the rows of one row group.
type rowGroups interface {
	Len() int
	// Record returns the accumulated rows; the caller writes and releases
	// it, then calls Reset.
	Record() arrow.Record
	Reset()
}

// flowRows accumulates flows with flowarrow's builder.
type flowRows struct{ b *flowarrow.Builder }

func (f *flowRows) Len() int             { return f.b.Len() }
func (f *flowRows) Record() arrow.Record { return f.b.Record() }
func (f *flowRows) Reset()               { f.b.Reset() }

// valueRows accumulates rows given as table values (PairValues,
// CandidateValues).
type valueRows struct {
	rb *array.RecordBuilder
	n  int
}

func newValueRows(s *arrow.Schema) *valueRows {
	return &valueRows{rb: array.NewRecordBuilder(memory.DefaultAllocator, s)}
}

func (v *valueRows) Len() int { return v.n }
func (v *valueRows) Record() arrow.Record {
	v.n = 0
	return v.rb.NewRecord()
}
func (v *valueRows) Reset() {}

// append adds one row; vals follow the table's column order and the Go
// types documented at table.PairValues.
func (v *valueRows) append(vals []any) {
	for i, val := range vals {
		switch b := v.rb.Field(i).(type) {
		case *array.TimestampBuilder:
			b.Append(arrow.Timestamp(val.(time.Time).UnixMilli()))
		case *array.FixedSizeBinaryBuilder:
			switch x := val.(type) {
			case netip.Addr:
				a := x.As16()
				b.Append(a[:])
			case []byte:
				b.Append(x)
			}
		case *array.Uint8Builder:
			b.Append(val.(uint8))
		case *array.Uint16Builder:
			b.Append(val.(uint16))
		case *array.Uint32Builder:
			b.Append(val.(uint32))
		case *array.Uint64Builder:
			b.Append(val.(uint64))
		case *array.Int64Builder:
			b.Append(val.(int64))
		case *array.Float64Builder:
			b.Append(val.(float64))
		case *array.StringBuilder:
			b.Append(val.(string))
		case *array.ListBuilder:
			b.Append(true)
			sb := b.ValueBuilder().(*array.StringBuilder)
			for _, s := range val.([]string) {
				sb.Append(s)
			}
		default:
			panic(fmt.Sprintf("parquet sink: no appender for %T", b))
		}
	}
	v.n++
}

// dayOf returns the UTC day number of a Unix millisecond time.
func dayOf(ms int64) int64 {
	d := ms / 86_400_000
	if ms < 0 && ms%86_400_000 != 0 {
		d--
	}
	return d
}

// dateOf returns the partition value (YYYY-MM-DD, UTC) of a day number.
func dateOf(day int64) string {
	return time.UnixMilli(day * 86_400_000).UTC().Format("2006-01-02")
}

// partitionDir returns TABLE/date=YYYY-MM-DD.
func partitionDir(tbl, date string) string { return tbl + "/date=" + date }

// isDataFile reports whether a file name is a finished Parquet file (not a
// temporary one).
func isDataFile(name string) bool {
	return strings.HasSuffix(name, ".parquet") && !strings.HasPrefix(name, ".")
}

var _ = flow.Pseudo{}
