package canary

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/ipc"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
)

// Counts counts what a format decoder decoded, so that a test can prove
// that a scan saw the rows it should have (a decoder that decodes nothing
// would let a canary test pass vacuously). The Scanner is not concurrent,
// so neither are Counts.
type Counts struct {
	// Inputs is the number of inputs decoded: Arrow IPC streams or files,
	// Parquet files, Kafka record batches.
	Inputs int64
	// Records is the number of Arrow record batches (Arrow, Parquet) or
	// Kafka records (Kafka).
	Records int64
	// Rows is the number of table rows decoded (Arrow, Parquet).
	Rows int64
	// Flows is the number of rows decoded as ccflow flows (flowarrow's
	// flow schema or the bus's wire schema) and emitted field by field.
	Flows int64
}

// arrowContinuation starts every encapsulated message of an Arrow IPC
// stream (format version 0.15 and later).
var arrowContinuation = []byte{0xff, 0xff, 0xff, 0xff}

// arrowFileMagic starts (and ends) an Arrow IPC file.
var arrowFileMagic = []byte("ARROW1")

// isArrowStream reports whether head starts like an Arrow IPC stream: the
// continuation marker and a plausible metadata length (a positive multiple
// of 8, as writers pad it).
func isArrowStream(head []byte) bool {
	if len(head) < 8 || !bytes.HasPrefix(head, arrowContinuation) {
		return false
	}
	n := binary.LittleEndian.Uint32(head[4:8])
	return n > 0 && n%8 == 0 && n < 1<<24
}

// ArrowIPC decodes Arrow IPC streams and files (by magic bytes; a zstd
// frame around a stream, the bus's default, is unwrapped first by the Zstd
// decoder). It reads every record batch with Arrow's reader, which also
// undoes Arrow buffer compression (zstd, lz4), and emits every buffer of
// every column (recursively: children, dictionaries) and, for binary and
// string columns, the values one per line. When the stream carries ccflow
// flows (flowarrow's flow schema or the bus's wire schema) it also decodes
// them with flowarrow and emits every field of flow.Pseudo as a column of
// its own plus one text line per flow (see emitFlows). c, if not nil,
// counts what was decoded.
func ArrowIPC(c *Counts) Decoder {
	if c == nil {
		c = new(Counts)
	}
	dec := flowarrow.NewDecoder(0)
	return Decoder{
		Name: "arrow",
		Match: func(_ string, h []byte) bool {
			return isArrowStream(h) || bytes.HasPrefix(h, arrowFileMagic)
		},
		Decode: func(r io.Reader, emit func(string, []byte) error) (err error) {
			// Arrow's readers trust lengths in the stream; a damaged
			// stream must be an error of the scan, not a crash.
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("corrupt arrow stream: %v", r)
				}
			}()
			data, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			c.Inputs++
			if bytes.HasPrefix(data, arrowFileMagic) {
				return emitArrowIPC(data, c, emit) // flowarrow reads streams only
			}
			// flowarrow first: it checks the framing of a flow stream
			// before anything is allocated, where Arrow's reader trusts
			// the lengths in a damaged stream (and can run out of memory).
			flows, _, err := dec.Decode(nil, data)
			switch {
			case errors.Is(err, flowarrow.ErrSchemaMismatch):
				// Arrow, but not flows: the columns only.
				return emitArrowIPC(data, c, emit)
			case err != nil:
				return fmt.Errorf("decode flows: %w", err)
			}
			c.Flows += int64(len(flows))
			if err := emitArrowIPC(data, c, emit); err != nil {
				return err
			}
			return emitFlows(flows, emit)
		},
	}
}

// emitArrowIPC reads an Arrow IPC stream or file with Arrow's reader and
// emits every column of every record batch.
func emitArrowIPC(data []byte, c *Counts, emit func(string, []byte) error) error {
	if bytes.HasPrefix(data, arrowFileMagic) {
		fr, err := ipc.NewFileReader(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("read arrow file: %w", err)
		}
		defer fr.Close()
		for i := 0; i < fr.NumRecords(); i++ {
			rec, err := fr.Record(i)
			if err != nil {
				return fmt.Errorf("read arrow file record %d: %w", i, err)
			}
			if err := emitRecord(fmt.Sprintf("rec%d", i), rec, c, emit); err != nil {
				return err
			}
		}
		return nil
	}
	rd, err := ipc.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("read arrow stream: %w", err)
	}
	defer rd.Release()
	for i := 0; rd.Next(); i++ {
		if err := emitRecord(fmt.Sprintf("rec%d", i), rd.Record(), c, emit); err != nil {
			return err
		}
	}
	if err := rd.Err(); err != nil {
		return fmt.Errorf("read arrow stream: %w", err)
	}
	return nil
}

// emitRecord emits every column of rec and counts it.
func emitRecord(name string, rec arrow.Record, c *Counts, emit func(string, []byte) error) error {
	c.Records++
	c.Rows += rec.NumRows()
	for i, f := range rec.Schema().Fields() {
		if err := emitArray(name+"."+f.Name, rec.Column(i), emit); err != nil {
			return err
		}
	}
	return nil
}

// emitArray emits every buffer of a (validity bitmaps, offsets, values),
// the values of binary and string arrays one per line (so that a textual
// canary form is not glued to its neighbour and missed), and recursively
// the arrays of its children and dictionary.
func emitArray(name string, a arrow.Array, emit func(string, []byte) error) error {
	d := a.Data()
	for i, b := range d.Buffers() {
		if b == nil || b.Len() == 0 {
			continue
		}
		if err := emit(fmt.Sprintf("%s.buf%d", name, i), b.Bytes()); err != nil {
			return err
		}
	}
	if vals := binaryValues(a); vals != nil {
		if err := emit(name+".values", vals); err != nil {
			return err
		}
	}
	for i, ch := range d.Children() {
		arr := array.MakeFromData(ch)
		err := emitArray(fmt.Sprintf("%s.child%d", name, i), arr, emit)
		arr.Release()
		if err != nil {
			return err
		}
	}
	if da, ok := a.(*array.Dictionary); ok {
		// The dictionary array is owned by da: no Release.
		if err := emitArray(name+".dict", da.Dictionary(), emit); err != nil {
			return err
		}
	}
	return nil
}

// binaryValues returns the values of a binary or string array, one per
// line, or nil for other arrays.
func binaryValues(a arrow.Array) []byte {
	var out []byte
	add := func(b []byte) { out = append(append(out, b...), '\n') }
	switch v := a.(type) {
	case *array.String:
		for i := 0; i < v.Len(); i++ {
			add([]byte(v.Value(i)))
		}
	case *array.LargeString:
		for i := 0; i < v.Len(); i++ {
			add([]byte(v.Value(i)))
		}
	case *array.Binary:
		for i := 0; i < v.Len(); i++ {
			add(v.Value(i))
		}
	case *array.LargeBinary:
		for i := 0; i < v.Len(); i++ {
			add(v.Value(i))
		}
	case *array.FixedSizeBinary:
		for i := 0; i < v.Len(); i++ {
			add(v.Value(i))
		}
	default:
		return nil
	}
	if out == nil {
		out = []byte{}
	}
	return out
}

// emitFlows emits the flows field by field: for every field of
// flow.Pseudo one part ("flow.Sub", "flow.Remote", ...) holding the
// field's value of every flow in its in-memory binary form (byte arrays as
// they are, integers big-endian at their width, strings one per line), and
// one part "flow.text" with a line per flow of every field as fmt's %v
// prints it (addresses dotted or IPv6 text, pseudonyms hex). A canary that
// reached any field, whatever its encoding on the wire, shows in one of
// them. Reflection keeps this in step with flow.Pseudo as fields are added.
func emitFlows(flows []flow.Pseudo, emit func(string, []byte) error) error {
	t := reflect.TypeOf(flow.Pseudo{})
	cols := make([][]byte, t.NumField())
	var text []byte
	for i := range flows {
		v := reflect.ValueOf(&flows[i]).Elem()
		for j := 0; j < t.NumField(); j++ {
			cols[j] = appendField(cols[j], v.Field(j))
			if v.Field(j).CanInterface() {
				text = fmt.Appendf(text, "%s=%v ", t.Field(j).Name, v.Field(j).Interface())
			}
		}
		text = append(text, '\n')
	}
	for j := 0; j < t.NumField(); j++ {
		if cols[j] == nil {
			continue
		}
		if err := emit("flow."+t.Field(j).Name, cols[j]); err != nil {
			return err
		}
	}
	return emit("flow.text", text)
}

// appendField appends the binary form of one field value.
func appendField(b []byte, v reflect.Value) []byte {
	switch v.Kind() {
	case reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			for i := 0; i < v.Len(); i++ {
				b = append(b, byte(v.Index(i).Uint()))
			}
			return b
		}
		for i := 0; i < v.Len(); i++ {
			b = appendField(b, v.Index(i))
		}
		return b
	case reflect.String:
		return append(append(b, v.String()...), '\n')
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return append(append(b, v.Bytes()...), '\n')
		}
		for i := 0; i < v.Len(); i++ {
			b = appendField(b, v.Index(i))
		}
		return b
	case reflect.Bool:
		if v.Bool() {
			return append(b, 1)
		}
		return append(b, 0)
	case reflect.Uint8, reflect.Int8:
		return append(b, byte(intBits(v)))
	case reflect.Uint16, reflect.Int16:
		return binary.BigEndian.AppendUint16(b, uint16(intBits(v)))
	case reflect.Uint32, reflect.Int32, reflect.Float32:
		return binary.BigEndian.AppendUint32(b, uint32(intBits(v)))
	case reflect.Uint64, reflect.Int64, reflect.Uint, reflect.Int, reflect.Uintptr, reflect.Float64:
		return binary.BigEndian.AppendUint64(b, intBits(v))
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			b = appendField(b, v.Field(i))
		}
		return b
	}
	return b
}

// intBits returns the bits of an integer or float value.
func intBits(v reflect.Value) uint64 {
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return uint64(v.Int())
	case reflect.Float32:
		return uint64(math.Float32bits(float32(v.Float())))
	case reflect.Float64:
		return math.Float64bits(v.Float())
	}
	return v.Uint()
}
