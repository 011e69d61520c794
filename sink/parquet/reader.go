package parquet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow/go/v15/arrow/memory"
	"github.com/apache/arrow/go/v15/parquet/file"
	"github.com/apache/arrow/go/v15/parquet/pqarrow"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/sink/table"
)

// FlowFiles returns the Parquet files of a flows table in replay order:
// partitions by date, files by name (which starts with the file's creation
// time). path may be the sink directory (holding flows/), the flows/
// directory itself, one date=YYYY-MM-DD partition, or a single file.
// Temporary files (dot-files) are skipped.
func FlowFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	root := path
	if st, err := os.Stat(filepath.Join(path, table.Flows)); err == nil && st.IsDir() {
		root = filepath.Join(path, table.Flows)
	}
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if isDataFile(d.Name()) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files) // date=YYYY-MM-DD/<UTC time>-... sorts by time
	if len(files) == 0 {
		return nil, fmt.Errorf("no Parquet flow files under %s", path)
	}
	return files, nil
}

// ReadFlows reads the flows table written by the Parquet sink (see
// FlowFiles for what path may name) and calls fn with the flows in the
// batches they were written in: consecutive rows with the same batch_id
// form one flow.Batch, also across row groups and files. Rows of one batch
// that the sink split into two date partitions come back as two batches
// with the same ID. fn owns each batch (ReadFlows does not reuse its
// memory); an error from fn stops the read and is returned. ReadFlows
// returns ctx.Err() when ctx ends. The files are pseudonymized already: no
// key is needed.
func ReadFlows(ctx context.Context, path string, fn func(flow.Batch) error) error {
	files, err := FlowFiles(path)
	if err != nil {
		return err
	}
	var cur flow.Batch
	emit := func() error {
		if len(cur.Flows) == 0 {
			return nil
		}
		b := cur
		cur = flow.Batch{}
		return fn(b)
	}
	for _, name := range files {
		if err := readFlowFile(ctx, name, func(id flow.BatchID, flows []flow.Pseudo) error {
			if id != cur.ID || len(cur.Flows) == 0 {
				if err := emit(); err != nil {
					return err
				}
				cur.ID = id
			}
			cur.Flows = append(cur.Flows, flows...)
			return nil
		}); err != nil {
			return err
		}
	}
	return emit()
}

// readFlowFile calls fn for each run of rows with the same batch ID.
func readFlowFile(ctx context.Context, name string, fn func(flow.BatchID, []flow.Pseudo) error) error {
	pf, err := file.OpenParquetFile(name, false)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 64 * 1024}, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	// One reader per row group: dictionary columns (LowCardinality strings)
	// cannot be read across row groups with different dictionaries.
	var ids []flow.BatchID
	for rg := 0; rg < pf.NumRowGroups(); rg++ {
		if err := readRowGroup(ctx, fr, rg, &ids, fn); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	return ctx.Err()
}

func readRowGroup(ctx context.Context, fr *pqarrow.FileReader, rg int, ids *[]flow.BatchID, fn func(flow.BatchID, []flow.Pseudo) error) error {
	rr, err := fr.GetRecordReader(ctx, nil, []int{rg})
	if err != nil {
		return err
	}
	defer rr.Release()
	for rr.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec := rr.Record()
		flows, err := flowarrow.AppendFlows(nil, rec)
		if err != nil {
			return err
		}
		if *ids, err = flowarrow.AppendBatchIDs((*ids)[:0], rec); err != nil {
			return err
		}
		for start := 0; start < len(flows); {
			end := start + 1
			for end < len(flows) && (*ids)[end] == (*ids)[start] {
				end++
			}
			if err := fn((*ids)[start], flows[start:end:end]); err != nil {
				return err
			}
			start = end
		}
	}
	if err := rr.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
