package parquet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/parquet"
	"github.com/apache/arrow/go/v15/parquet/pqarrow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/sink/internal/dedup"
	"github.com/ccflow/ccflow/sink/internal/durable"
	"github.com/ccflow/ccflow/sink/internal/lag"
	"github.com/ccflow/ccflow/sink/internal/signal"
	"github.com/ccflow/ccflow/sink/table"
)

// Errors of the Writer.
var (
	// ErrStopped is returned by a Write or Sync after Stop, and by a Sync
	// that was waiting when Stop gave up on the files it waited for.
	ErrStopped = errors.New("parquet sink stopped")
	// ErrNotStarted is returned by Sync before Start.
	ErrNotStarted = errors.New("parquet sink not started")
)

// Deps are the Writer's dependencies.
type Deps struct {
	// Logger receives log lines; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Writer is the Parquet sink. It implements sink.Writer: Writes are
// goroutine-safe and copy their rows into Arrow builders at once. Rows go
// to one open file per table and day (UTC, from time_start or
// window_start), built in memory; a file is closed when it reaches
// MaxFileBytes or RotateInterval, then one background goroutine writes it
// under a temporary name, syncs it and renames it into place, retrying
// with backoff while that fails. Files appear whole or not at all; a file
// is written once (its name is fixed when it is closed, and a retry
// replaces a partial temporary file). Sync closes the open files and waits
// until they are on disk.
type Writer struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	props    map[string]*parquet.WriterProperties // by table, see props.go
	aprops   pqarrow.ArrowWriterProperties
	instance string
	schemas  map[string]*arrow.Schema

	mu       sync.Mutex
	open     map[partKey]*openFile
	pending  []*pendingFile
	memBytes int64 // open file buffers and pending files
	memRows  int
	// space is broadcast when a file is stored (memory frees,
	// storedSeq grows) and when Stop begins and ends.
	space     signal.Signal
	seq       uint64 // sequence of the last closed file
	storedSeq uint64 // sequence of the last file stored (files are stored in order)
	dropErr   error  // set for good once rows were dropped (see Sync)
	recent    *dedup.Recent
	stopping  bool
	stopped   bool // the disk goroutine has ended

	wake     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error
}

type partKey struct {
	table string
	day   int64
}

// openFile is a Parquet file being built in memory.
type openFile struct {
	key     partKey
	created time.Time
	buf     bytes.Buffer
	fw      *pqarrow.FileWriter
	rg      rowGroups
	flows   *flowarrow.Builder // flows table
	vals    *valueRows         // other tables
	rows    int
	counted int64 // bytes of buf already counted in memBytes
}

// pendingFile is a closed file waiting to be written to disk.
type pendingFile struct {
	seq     uint64 // Writer.seq when it was closed
	table   string
	path    string // relative to Dir
	data    []byte
	rows    int
	created time.Time
}

// New returns a Writer. It does no I/O.
func New(cfg Config, deps Deps) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	schemas := map[string]*arrow.Schema{}
	props := map[string]*parquet.WriterProperties{}
	for _, t := range []string{table.Flows, table.Pairs, table.Candidates} {
		s, err := Schema(t)
		if err != nil {
			return nil, err
		}
		schemas[t] = s
		props[t] = writerProperties(t, cfg)
	}
	var inst [4]byte
	if _, err := rand.Read(inst[:]); err != nil {
		return nil, err
	}
	return &Writer{
		cfg: cfg, log: log.With("stage", "sink", "sink", "parquet"), m: newMetrics(deps.Registerer),
		props:    props,
		aprops:   pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()),
		instance: hex.EncodeToString(inst[:]),
		schemas:  schemas,
		open:     map[partKey]*openFile{},
		recent:   dedup.New(dedup.Size),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}, nil
}

// Start starts the goroutine that rotates files and writes them to disk.
// An unwritable directory is not an error here: writes are retried. The
// goroutine runs until Stop.
func (w *Writer) Start(_ context.Context) error {
	if err := os.MkdirAll(w.cfg.Dir, 0o755); err != nil {
		w.log.Warn("output directory not writable yet, will retry", "error", err)
	}
	// The loop outlives ctx (a canceled run context must not keep Stop
	// from flushing); Stop ends it.
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return nil
}

// WriteFlows implements sink.Writer. A batch equal to one of the last
// dedup.Size batches it stored (same ID, row count and first start time: a
// redelivery) is dropped and counted.
func (w *Writer) WriteFlows(ctx context.Context, b flow.Batch) error {
	if len(b.Flows) == 0 {
		return nil
	}
	if err := w.lockForWrite(ctx); err != nil {
		return err
	}
	defer w.mu.Unlock()
	key, keyed := dedup.KeyOf(b)
	if keyed && w.recent.Contains(key) {
		w.m.duplicates.Inc()
		return nil
	}
	var of *openFile
	day := int64(-1 << 62)
	for i := range b.Flows {
		f := &b.Flows[i]
		if d := dayOf(f.TimeStartMs); d != day || of == nil {
			day = d
			if of, _ = w.fileLocked(table.Flows, d); of == nil {
				return fmt.Errorf("parquet sink: cannot open file")
			}
		}
		of.flows.Append(b.ID, f)
		of.rows++
		w.memRows++
		if of.rg.Len() >= w.cfg.RowGroupRows {
			if err := w.flushRowGroupLocked(of); err != nil {
				return err
			}
			if of.buf.Len() >= int(w.cfg.MaxFileBytes) {
				w.closeLocked(of)
				of = nil
			}
		}
	}
	if keyed {
		w.recent.Add(key)
	}
	w.m.buffered.Set(float64(w.memRows))
	return nil
}

// WritePairs implements sink.Writer.
func (w *Writer) WritePairs(ctx context.Context, pairs []flow.PairScore) error {
	return w.writeValues(ctx, table.Pairs, len(pairs), func(i int) (int64, []any) {
		return dayOf(pairs[i].WindowStart.UnixMilli()), table.PairValues(&pairs[i])
	})
}

// WriteCandidates implements sink.Writer.
func (w *Writer) WriteCandidates(ctx context.Context, cands []flow.Candidate) error {
	return w.writeValues(ctx, table.Candidates, len(cands), func(i int) (int64, []any) {
		return dayOf(cands[i].WindowStart.UnixMilli()), table.CandidateValues(&cands[i])
	})
}

func (w *Writer) writeValues(ctx context.Context, tbl string, n int, row func(int) (int64, []any)) error {
	if n == 0 {
		return nil
	}
	if err := w.lockForWrite(ctx); err != nil {
		return err
	}
	defer w.mu.Unlock()
	for i := 0; i < n; i++ {
		day, vals := row(i)
		of, err := w.fileLocked(tbl, day)
		if err != nil {
			return err
		}
		of.vals.append(vals)
		of.rows++
		w.memRows++
		if of.rg.Len() >= w.cfg.RowGroupRows {
			if err := w.flushRowGroupLocked(of); err != nil {
				return err
			}
			if of.buf.Len() >= int(w.cfg.MaxFileBytes) {
				w.closeLocked(of)
			}
		}
	}
	w.m.buffered.Set(float64(w.memRows))
	return nil
}

// lockForWrite waits until memory is below its bound and returns with
// w.mu held, or returns an error without it.
func (w *Writer) lockForWrite(ctx context.Context) error {
	w.mu.Lock()
	for {
		if w.stopping {
			w.mu.Unlock()
			return ErrStopped
		}
		if w.memBytes < w.cfg.MaxPendingBytes {
			return nil
		}
		if err := w.space.Wait(ctx, &w.mu); err != nil {
			w.mu.Unlock()
			return err
		}
	}
}

// fileLocked returns the open file of a table and day, opening one.
func (w *Writer) fileLocked(tbl string, day int64) (*openFile, error) {
	k := partKey{tbl, day}
	if of := w.open[k]; of != nil {
		return of, nil
	}
	of := &openFile{key: k, created: time.Now()}
	fw, err := pqarrow.NewFileWriter(w.schemas[tbl], &of.buf, w.props[tbl], w.aprops)
	if err != nil {
		return nil, fmt.Errorf("new parquet writer for %s: %w", tbl, err)
	}
	of.fw = fw
	if tbl == table.Flows {
		of.flows = flowarrow.NewBuilder()
		of.rg = &flowRows{of.flows}
	} else {
		of.vals = newValueRows(w.schemas[tbl])
		of.rg = of.vals
	}
	w.open[k] = of
	return of, nil
}

// flushRowGroupLocked writes the accumulated rows of of as a row group.
func (w *Writer) flushRowGroupLocked(of *openFile) error {
	if of.rg.Len() == 0 {
		return nil
	}
	rec := of.rg.Record()
	err := of.fw.Write(rec)
	rec.Release()
	of.rg.Reset()
	grown := int64(of.buf.Len()) - of.counted
	of.counted += grown
	w.memBytes += grown
	w.m.pending.Set(float64(w.memBytes))
	if err != nil {
		err = fmt.Errorf("encode %s row group: %w", of.key.table, err)
		w.droppedLocked(err)
		return err
	}
	return nil
}

// droppedLocked records that rows of earlier Writes were lost: every later
// Sync fails, so that the caller does not acknowledge them (and starts again
// from its last acknowledged point).
func (w *Writer) droppedLocked(err error) {
	if w.dropErr == nil {
		w.dropErr = fmt.Errorf("parquet sink dropped rows: %w", err)
	}
	// The dropped batches must be accepted when they come again.
	w.recent.Reset()
}

// closeLocked finishes of and queues it for the disk.
func (w *Writer) closeLocked(of *openFile) {
	delete(w.open, of.key)
	err := w.flushRowGroupLocked(of)
	if err == nil {
		err = of.fw.Close()
	}
	if err != nil {
		// Encoding into memory does not fail for valid rows; if it does, the
		// rows cannot be stored: count and report them.
		w.m.errors.WithLabelValues(of.key.table, "encode").Inc()
		w.log.Error("encode parquet file failed, rows dropped", "table", of.key.table, "rows", of.rows, "error", err)
		w.droppedLocked(err)
		w.memBytes -= of.counted
		w.memRows -= of.rows
		return
	}
	data := of.buf.Bytes()
	w.memBytes += int64(len(data)) - of.counted
	w.seq++
	name := fmt.Sprintf("%s-%s-%06d.parquet", of.created.UTC().Format("20060102T150405.000Z"), w.instance, w.seq)
	w.pending = append(w.pending, &pendingFile{
		seq: w.seq, table: of.key.table, path: filepath.Join(partitionDir(of.key.table, dateOf(of.key.day)), name),
		data: data, rows: of.rows, created: of.created,
	})
	w.m.pending.Set(float64(w.memBytes))
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run rotates aged files and writes closed files to disk, in order.
func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(min(w.cfg.RotateInterval/4, time.Second))
	defer tick.Stop()
	for {
		w.mu.Lock()
		now := time.Now()
		for _, of := range w.open {
			if w.stopping || now.Sub(of.created) >= w.cfg.RotateInterval {
				w.closeLocked(of)
			}
		}
		w.updateLagLocked(now)
		var pf *pendingFile
		if len(w.pending) > 0 {
			pf = w.pending[0]
		}
		finished := w.stopping && pf == nil
		w.mu.Unlock()
		if finished {
			return
		}
		if pf == nil {
			select {
			case <-w.wake:
			case <-tick.C:
			case <-w.ctx.Done():
				return
			}
			continue
		}
		if !w.store(pf) {
			return
		}
		w.mu.Lock()
		w.pending = w.pending[1:]
		w.storedSeq = pf.seq
		w.memBytes -= int64(len(pf.data))
		w.memRows -= pf.rows
		w.space.Broadcast()
		w.m.pending.Set(float64(w.memBytes))
		w.m.buffered.Set(float64(w.memRows))
		w.mu.Unlock()
		w.m.rows.WithLabelValues(pf.table).Add(float64(pf.rows))
		w.m.files.WithLabelValues(pf.table).Inc()
	}
}

// store writes pf to disk, retrying with backoff; false means the writer
// was told to give up.
func (w *Writer) store(pf *pendingFile) bool {
	backoff := w.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		err := durable.WriteFile(filepath.Join(w.cfg.Dir, pf.path), pf.data, 0o644)
		if err == nil {
			if attempt > 1 {
				w.log.Info("file written after retries", "table", pf.table, "attempts", attempt)
			}
			return true
		}
		w.m.errors.WithLabelValues(pf.table, "write").Inc()
		if attempt == 1 || attempt%10 == 0 {
			w.log.Warn("write parquet file failed, will retry", "table", pf.table, "attempts", attempt, "error", err)
		}
		select {
		case <-time.After(backoff):
		case <-w.ctx.Done():
			return false
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}

func (w *Writer) updateLagLocked(now time.Time) {
	oldest := lag.New()
	for _, of := range w.open {
		oldest.See(of.key.table, of.created)
	}
	for _, pf := range w.pending {
		oldest.See(pf.table, pf.created)
	}
	oldest.Report(w.m.lag, now, table.Flows, table.Pairs, table.Candidates)
}

// Sync implements sink.Writer: it closes every open file (one per table
// and day that has rows, however few) and returns once those files, and
// every file closed before, are renamed into place with the file and its
// directory fsynced. Later Writes go to new files and do not delay it.
// Failed file writes are retried without limit while the Writer runs, so
// while the directory is unwritable Sync returns only when ctx ends (the
// files stay queued) or Stop gives up on them (ErrStopped). It fails for
// good once rows were dropped (a Parquet encoding error, which valid rows
// do not cause).
func (w *Writer) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return ErrStopped
	}
	if w.ctx == nil {
		return ErrNotStarted
	}
	for _, of := range w.open {
		w.closeLocked(of)
	}
	target := w.seq
	for {
		switch {
		case w.dropErr != nil:
			return w.dropErr
		case w.storedSeq >= target:
			return nil
		case w.stopped:
			return fmt.Errorf("files not written at stop: %w", ErrStopped)
		}
		if err := w.space.Wait(ctx, &w.mu); err != nil {
			return err
		}
	}
}

// Stop refuses further writes, closes every open file and waits until all
// files are on disk, retrying a failing disk for at most Config.StopTimeout. It
// returns an error naming the rows that could not be written. Stop is
// idempotent.
func (w *Writer) Stop() error {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.stopping = true
		for _, of := range w.open {
			w.closeLocked(of)
		}
		w.space.Broadcast() // release waiting writers: they get ErrStopped
		started := w.ctx != nil
		w.mu.Unlock()
		if !started {
			w.ctx, w.cancel = context.WithCancel(context.Background())
			go w.run()
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
		timer := time.AfterFunc(w.cfg.StopTimeout, w.cancel)
		<-w.done
		timer.Stop()
		w.cancel()
		w.mu.Lock()
		defer w.mu.Unlock()
		w.stopped = true
		w.space.Broadcast() // wake Syncs still waiting: they fail
		rows := 0
		for _, pf := range w.pending {
			rows += pf.rows
		}
		if rows > 0 {
			w.stopErr = fmt.Errorf("parquet sink: %d rows in %d files could not be written to %s", rows, len(w.pending), w.cfg.Dir)
		}
	})
	return w.stopErr
}
