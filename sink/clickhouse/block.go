package clickhouse

import (
	"bytes"
	"context"
	"encoding/gob"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/klauspost/compress/zstd"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/table"
)

// Block is one insert: rows of one table under one deduplication token.
// A block keeps its token through retries, spilling and restarts, so the
// server stores it once (insert_deduplication_token).
type Block struct {
	// Table is the destination table.
	Table string
	// Token is the deduplication token: the sink instance and a sequence.
	Token string
	// Created is when the block's first row was written to the sink.
	Created time.Time
	// Flows and FlowIDs hold the rows of flows; FlowIDs are runs of
	// batch IDs (the batch_id column).
	Flows   []flow.Pseudo
	FlowIDs []IDRun
	// Pairs and Candidates hold the rows of the other tables.
	Pairs      []flow.PairScore
	Candidates []flow.Candidate

	// seq is the Writer's sequence of the block (0 for a block read from
	// the spill directory); spillPath is set when a block was spilled
	// while being inserted. Neither is spilled (gob skips them).
	seq       uint64
	spillPath string
}

// IDRun says that the next N rows of a block carry batch ID ID.
type IDRun struct {
	ID flow.BatchID
	N  int
}

// Rows returns the number of rows in b.
func (b *Block) Rows() int { return len(b.Flows) + len(b.Pairs) + len(b.Candidates) }

// Inserter inserts blocks. The production implementation is the
// clickhouse-go connection (NewConnInserter); unit tests of the sink's
// retry and spill logic pass their own. Insert must return when ctx ends;
// it is called from one goroutine at a time.
type Inserter interface {
	Insert(ctx context.Context, b *Block) error
	Close() error
}

// ConnInserter inserts blocks with clickhouse-go's native batch insert.
type ConnInserter struct {
	conn driver.Conn
}

// NewConnInserter returns an Inserter over conn.
func NewConnInserter(conn driver.Conn) *ConnInserter { return &ConnInserter{conn: conn} }

// InsertSettings are the query settings of every insert: the
// deduplication token makes a retried block a no-op, also for the
// materialized views fed by the table.
func InsertSettings(token string) clickhouse.Settings {
	return clickhouse.Settings{
		"insert_deduplicate":                                 1,
		"insert_deduplication_token":                         token,
		"deduplicate_blocks_in_dependent_materialized_views": 1,
	}
}

// InsertQuery returns the INSERT statement of table, naming its columns.
func InsertQuery(tbl string) string {
	cols := table.Columns[tbl]
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return "INSERT INTO " + tbl + " (" + strings.Join(names, ", ") + ")"
}

// Insert sends b as one native batch.
func (ci *ConnInserter) Insert(ctx context.Context, b *Block) error {
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(InsertSettings(b.Token)))
	batch, err := ci.conn.PrepareBatch(ctx, InsertQuery(b.Table))
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", b.Table, err)
	}
	defer batch.Abort() //nolint:errcheck // no-op after Send
	switch b.Table {
	case table.Flows:
		i := 0
		for _, run := range b.FlowIDs {
			for j := 0; j < run.N; j++ {
				if err := batch.Append(flowRow(&b.Flows[i], run.ID)...); err != nil {
					return fmt.Errorf("append to %s: %w", b.Table, err)
				}
				i++
			}
		}
	case table.Pairs:
		for i := range b.Pairs {
			if err := batch.Append(table.PairValues(&b.Pairs[i])...); err != nil {
				return fmt.Errorf("append to %s: %w", b.Table, err)
			}
		}
	case table.Candidates:
		for i := range b.Candidates {
			if err := batch.Append(table.CandidateValues(&b.Candidates[i])...); err != nil {
				return fmt.Errorf("append to %s: %w", b.Table, err)
			}
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", b.Table, err)
	}
	return nil
}

// Close closes the connection.
func (ci *ConnInserter) Close() error { return ci.conn.Close() }

// encodeBlock serializes b for the spill directory (gob, zstd).
func encodeBlock(b *Block) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, err
	}
	if err := gob.NewEncoder(zw).Encode(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeBlock reads a block written by encodeBlock.
func decodeBlock(data []byte) (*Block, error) {
	zr, err := zstd.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	var b Block
	if err := gob.NewDecoder(zr).Decode(&b); err != nil {
		return nil, err
	}
	return &b, nil
}
