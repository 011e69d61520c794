package canary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow/go/v15/arrow/memory"
	"github.com/apache/arrow/go/v15/parquet/file"
	"github.com/apache/arrow/go/v15/parquet/pqarrow"

	"github.com/ccflow/ccflow/flow/flowarrow"
)

// parquetMagic starts and ends every Parquet file.
var parquetMagic = []byte("PAR1")

// Parquet decodes Parquet files (by magic bytes) with pqarrow, which undoes
// page compression (zstd, snappy, gzip, ...) and encodings (dictionary,
// RLE, delta): every column of every row group is read into Arrow and
// emitted as ArrowIPC emits columns (buffers, binary values one per line,
// children, dictionaries). Files of the flows table (every column of
// flowarrow's flow schema present) are also decoded into flows and emitted
// field by field (see ArrowIPC). The raw file is searched too: its footer
// and page headers (statistics, key-value metadata) are not compressed. c,
// if not nil, counts what was decoded.
func Parquet(c *Counts) Decoder {
	if c == nil {
		c = new(Counts)
	}
	return Decoder{
		Name: "parquet",
		Match: func(_ string, h []byte) bool {
			return bytes.HasPrefix(h, parquetMagic)
		},
		Decode: func(r io.Reader, emit func(string, []byte) error) error {
			data, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			c.Inputs++
			return decodeParquet(data, c, emit)
		},
	}
}

func decodeParquet(data []byte, c *Counts, emit func(string, []byte) error) (err error) {
	// The Parquet reader trusts lengths in the file; a damaged file must
	// be an error of the scan, not a crash of the test binary.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("corrupt parquet file: %v", r)
		}
	}()
	pf, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("open parquet: %w", err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 64 * 1024}, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("read parquet: %w", err)
	}
	isFlows := hasFlowColumns(fr)
	// One reader per row group: dictionary columns cannot be read across
	// row groups with different dictionaries.
	for rg := 0; rg < pf.NumRowGroups(); rg++ {
		rr, err := fr.GetRecordReader(context.Background(), nil, []int{rg})
		if err != nil {
			return fmt.Errorf("read parquet row group %d: %w", rg, err)
		}
		for i := 0; rr.Next(); i++ {
			rec := rr.Record()
			if err := emitRecord(fmt.Sprintf("rg%d.rec%d", rg, i), rec, c, emit); err != nil {
				rr.Release()
				return err
			}
			if isFlows {
				flows, err := flowarrow.AppendFlows(nil, rec)
				if err != nil {
					rr.Release()
					return fmt.Errorf("decode flows of row group %d: %w", rg, err)
				}
				c.Flows += int64(len(flows))
				if err := emitFlows(flows, emit); err != nil {
					rr.Release()
					return err
				}
			}
		}
		err = rr.Err()
		rr.Release()
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read parquet row group %d: %w", rg, err)
		}
	}
	return nil
}

// hasFlowColumns reports whether the file has every column of the flow
// schema (the Parquet sink's flows table).
func hasFlowColumns(fr *pqarrow.FileReader) bool {
	s, err := fr.Schema()
	if err != nil {
		return false
	}
	for _, f := range flowarrow.Schema().Fields() {
		if len(s.FieldIndices(f.Name)) == 0 {
			return false
		}
	}
	return true
}
