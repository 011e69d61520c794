// Package sink stores what ccflow produces: pseudonymized flows, pair
// scores and C&C candidates. Two implementations exist: Parquet files
// (sink/parquet, the default) and ClickHouse (sink/clickhouse). Both use
// the tables and column names of docs/schema.md and deploy/clickhouse.
package sink

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/clickhouse"
	"github.com/ccflow/ccflow/sink/parquet"
)

// Writer stores flows, pair scores and candidates.
//
// Contract:
//   - Start is called once before any Write; Stop once after the last.
//     Stop flushes every buffered row and returns when the rows are stored
//     (or the destination cannot take them: then it returns the error and
//     says how many rows it could not store).
//   - The Write methods are safe for concurrent use by several goroutines.
//     A Write copies what it keeps: the caller may reuse the batch or slice
//     when it returns.
//   - A Write returns quickly while memory is within the writer's bound.
//     When the destination is unavailable and the bound is reached, Write
//     waits (backpressure) until there is room, and returns ctx.Err() if
//     ctx ends first; the rows of a Write that returned an error were not
//     taken. A Write never drops rows silently.
//   - A row handed to a Write that returned nil is stored exactly once,
//     even when the writer retried (deduplication token, atomic files).
//   - Sync is the durability barrier for acknowledging input (committing
//     Kafka offsets): once it returns nil, the rows of every Write that
//     returned before it was called survive a crash of the process.
type Writer interface {
	// Start starts the writer's background work and returns; ctx bounds
	// only the start itself. The background work runs until Stop, so that
	// a canceled run context (SIGTERM) still lets Stop flush.
	Start(ctx context.Context) error
	// WriteFlows stores a batch of flows; b.ID goes to the batch_id column.
	WriteFlows(ctx context.Context, b flow.Batch) error
	// WritePairs stores pair scores (table beacon_pairs).
	WritePairs(ctx context.Context, pairs []flow.PairScore) error
	// WriteCandidates stores candidates (table cc_candidates).
	WriteCandidates(ctx context.Context, cands []flow.Candidate) error
	// Sync returns once every row of every Write that returned before Sync
	// was called is durable: in a file renamed into place (Parquet) or
	// inserted into ClickHouse or written to the on-disk spill (ClickHouse),
	// with files and their directories fsynced. It returns ctx.Err() if ctx
	// ends first (rows stay queued; nothing is dropped), or an error when
	// the destination cannot take them within the writer's retry policy
	// (both writers retry without limit until Stop, so in practice: Stop
	// gave up on them, or rows were dropped). It returns an error before
	// Start and after Stop. Safe for concurrent use with the Write methods.
	//
	// Each Sync ends the writer's current files or blocks early: call it at
	// checkpoint intervals (minutes), not per batch (docs/storage.md).
	Sync(ctx context.Context) error
	// Stop flushes and stops; it is idempotent.
	Stop() error
}

var (
	_ Writer = (*parquet.Writer)(nil)
	_ Writer = (*clickhouse.Writer)(nil)
)

// Deps are the sink's dependencies.
type Deps struct {
	// Logger receives the sink's log lines; nil discards them.
	Logger *slog.Logger
	// Registerer receives the sink's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// New returns the Writer that cfg.Kind selects. It does no I/O; Start does.
func New(cfg Config, deps Deps) (Writer, error) {
	switch cfg.Kind {
	case KindParquet, "":
		return parquet.New(cfg.Parquet, parquet.Deps{Logger: deps.Logger, Registerer: deps.Registerer})
	case KindClickHouse:
		return clickhouse.New(cfg.ClickHouse, clickhouse.Deps{Logger: deps.Logger, Registerer: deps.Registerer})
	}
	return nil, fmt.Errorf("unknown sink kind %q", cfg.Kind)
}
