package clickhouse

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/internal/dedup"
	"github.com/ccflow/ccflow/sink/internal/durable"
	"github.com/ccflow/ccflow/sink/internal/lag"
	"github.com/ccflow/ccflow/sink/internal/signal"
	"github.com/ccflow/ccflow/sink/table"
)

// Errors of the Writer.
var (
	// ErrStopped is returned by a Write or Sync after Stop.
	ErrStopped = errors.New("clickhouse sink stopped")
	// ErrNotStarted is returned by Sync before Start.
	ErrNotStarted = errors.New("clickhouse sink not started")
)

// Deps are the Writer's dependencies.
type Deps struct {
	// Logger receives log lines; nil discards them.
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Inserter replaces the clickhouse-go connection (unit tests of the
	// retry and spill logic); nil means connect to Config.DSN.
	Inserter Inserter
}

// Writer is the ClickHouse sink. It implements sink.Writer: Writes are
// goroutine-safe and copy their input; one background goroutine inserts
// blocks in order, retrying with backoff, and spills blocks to SpillDir
// while inserts fail and memory is above half of MaxBufferedRows, or while
// inserts fail and a Sync waits.
type Writer struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	ins      Inserter
	instance string

	mu sync.Mutex
	// space is broadcast when blocks leave the queue (inserted
	// or spilled: memory frees) and when Stop begins and ends.
	space    signal.Signal
	bufs     map[string]*Block
	queue    []*Block // cut blocks in memory, oldest (lowest seq) first
	inflight *Block   // the block being inserted (from queue or spill)
	memRows  int      // rows in bufs and queue
	spill    []spillFile
	spillSz  int64
	seq      uint64 // sequence of the last cut block
	syncSeq  uint64 // a Sync waits for the queued blocks up to this sequence
	failing  bool   // the last insert attempt failed
	lostErr  error  // rows were neither inserted nor spilled at Stop
	recent   *dedup.Recent
	stopping bool
	stopped  bool

	wake     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error
}

type spillFile struct {
	path    string
	table   string
	rows    int
	size    int64
	created time.Time
}

// New returns a Writer. It does no I/O: Start connects and reads the spill
// directory.
func New(cfg Config, deps Deps) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Inserter == nil && cfg.DSN == "" {
		return nil, ErrNoDSN
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var inst [8]byte
	if _, err := rand.Read(inst[:]); err != nil {
		return nil, err
	}
	return &Writer{
		cfg: cfg, log: log.With("stage", "sink", "sink", "clickhouse"), m: newMetrics(deps.Registerer),
		ins: deps.Inserter, instance: hex.EncodeToString(inst[:]),
		bufs: map[string]*Block{}, recent: dedup.New(dedup.Size), wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}, nil
}

// Start opens the connection (lazily: ClickHouse may be down at start),
// picks up blocks spilled by an earlier run, and starts the insert loop,
// which runs until Stop.
func (w *Writer) Start(_ context.Context) error {
	if w.ins == nil {
		opts, err := Options(w.cfg)
		if err != nil {
			return err
		}
		conn, err := clickhouse.Open(opts)
		if err != nil {
			return fmt.Errorf("open ClickHouse connection: %w", err)
		}
		w.ins = NewConnInserter(conn)
	}
	if w.cfg.SpillDir != "" {
		if err := w.loadSpill(); err != nil {
			return err
		}
	}
	// The loop outlives ctx (a canceled run context must not keep Stop
	// from flushing); Stop ends it.
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return nil
}

// WriteFlows implements sink.Writer. A batch equal to one of the last
// dedup.Size batches it took (same ID, row count and first start time: a
// redelivery) is dropped and counted; the server's deduplication token
// catches a redelivery only when it lands in an identical block.
func (w *Writer) WriteFlows(ctx context.Context, b flow.Batch) error {
	if len(b.Flows) == 0 {
		return nil
	}
	key, keyed := dedup.KeyOf(b)
	if !keyed {
		key = dedupNone
	}
	return w.write(ctx, table.Flows, len(b.Flows), key, func(blk *Block) {
		blk.Flows = append(blk.Flows, b.Flows...)
		if n := len(blk.FlowIDs); n > 0 && blk.FlowIDs[n-1].ID == b.ID {
			blk.FlowIDs[n-1].N += len(b.Flows)
		} else {
			blk.FlowIDs = append(blk.FlowIDs, IDRun{ID: b.ID, N: len(b.Flows)})
		}
	})
}

// WritePairs implements sink.Writer.
func (w *Writer) WritePairs(ctx context.Context, pairs []flow.PairScore) error {
	if len(pairs) == 0 {
		return nil
	}
	return w.write(ctx, table.Pairs, len(pairs), dedupNone, func(blk *Block) { blk.Pairs = append(blk.Pairs, pairs...) })
}

// WriteCandidates implements sink.Writer.
func (w *Writer) WriteCandidates(ctx context.Context, cands []flow.Candidate) error {
	if len(cands) == 0 {
		return nil
	}
	return w.write(ctx, table.Candidates, len(cands), dedupNone, func(blk *Block) {
		for _, c := range cands {
			c.Intel = append([]string(nil), c.Intel...)
			blk.Candidates = append(blk.Candidates, c)
		}
	})
}

// dedupNone is the key of writes that are not deduplicated.
var dedupNone dedup.Key

// write adds n rows of tbl with add, unless key (not dedupNone) was
// written recently.
func (w *Writer) write(ctx context.Context, tbl string, n int, key dedup.Key, add func(*Block)) error {
	w.mu.Lock()
	for {
		if w.stopping {
			w.mu.Unlock()
			return ErrStopped
		}
		if w.memRows == 0 || w.memRows+n <= w.cfg.MaxBufferedRows {
			break
		}
		w.kick()
		if err := w.space.Wait(ctx, &w.mu); err != nil {
			w.mu.Unlock()
			return err
		}
	}
	if key != dedupNone {
		if w.recent.Contains(key) {
			w.mu.Unlock()
			w.m.duplicates.Inc()
			return nil
		}
		w.recent.Add(key)
	}
	blk := w.bufs[tbl]
	if blk == nil {
		blk = &Block{Table: tbl, Created: time.Now()}
		w.bufs[tbl] = blk
	}
	add(blk)
	w.memRows += n
	w.m.buffered.Set(float64(w.memRows))
	cut := blk.Rows() >= w.cfg.BatchRows
	if cut {
		w.cutLocked(tbl)
	}
	w.mu.Unlock()
	if cut {
		w.kick()
	}
	return nil
}

func (w *Writer) kick() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// cutLocked turns a table's buffer into a queued block with its token.
func (w *Writer) cutLocked(tbl string) {
	blk := w.bufs[tbl]
	if blk == nil || blk.Rows() == 0 {
		return
	}
	delete(w.bufs, tbl)
	w.seq++
	blk.seq = w.seq
	blk.Token = w.token(blk)
	w.queue = append(w.queue, blk)
}

// token returns the deduplication token of a block. A flows block whose
// batches all carry IDs gets a token derived from those IDs, so a batch
// delivered again in the same grouping is also dropped; other blocks get
// the writer instance and a sequence number.
func (w *Writer) token(b *Block) string {
	inst := fmt.Sprintf("ccflow-%s-%d", w.instance, w.seq)
	if b.Table != table.Flows {
		return inst
	}
	h := sha256.New()
	h.Write([]byte(b.Table))
	var n [8]byte
	for _, r := range b.FlowIDs {
		if r.ID == (flow.BatchID{}) {
			return inst
		}
		h.Write(r.ID[:])
		binary.BigEndian.PutUint64(n[:], uint64(r.N))
		h.Write(n[:])
	}
	return "ccflow-b-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// freedLocked wakes writers waiting for memory.
func (w *Writer) freedLocked() {
	w.space.Broadcast()
	w.m.buffered.Set(float64(w.memRows))
}

// run is the insert loop.
func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(min(w.cfg.BatchInterval/2, time.Second))
	defer tick.Stop()
	for {
		blk, sf := w.next()
		if blk == nil {
			w.mu.Lock()
			finished := w.stopping && len(w.queue) == 0 && len(w.spill) == 0 && len(w.bufs) == 0
			w.mu.Unlock()
			if finished {
				return
			}
			select {
			case <-w.wake:
			case <-tick.C:
			case <-w.ctx.Done():
				return
			}
			continue
		}
		if !w.insert(blk) {
			return // stopped while failing; Stop spills what is left
		}
		w.mu.Lock()
		w.inflight = nil
		if sf == nil && blk.spillPath != "" {
			// Spilled while being inserted (a Sync during an outage).
			sf = &spillFile{path: blk.spillPath}
		}
		if sf != nil {
			w.removeSpillLocked(sf.path)
		} else {
			w.queue = w.queue[1:]
			w.memRows -= blk.Rows()
			w.freedLocked()
		}
		w.updateGaugesLocked()
		w.mu.Unlock()
		w.m.rows.WithLabelValues(blk.Table).Add(float64(blk.Rows()))
		w.m.blocks.WithLabelValues(blk.Table).Inc()
	}
}

// removeSpillLocked forgets the spilled block at path and removes its file.
func (w *Writer) removeSpillLocked(path string) {
	for i, f := range w.spill {
		if f.path == path {
			w.spill = append(w.spill[:i:i], w.spill[i+1:]...)
			w.spillSz -= f.size
			break
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.log.Warn("remove spilled block failed", "error", err)
	}
}

// next returns the next block to insert: spilled blocks first (they are
// older), then queued ones. Buffers older than BatchInterval (all of them
// once stopping) are cut first.
func (w *Writer) next() (*Block, *spillFile) {
	w.mu.Lock()
	now := time.Now()
	for t, b := range w.bufs {
		if w.stopping || now.Sub(b.Created) >= w.cfg.BatchInterval {
			w.cutLocked(t)
		}
	}
	w.updateGaugesLocked()
	for len(w.spill) > 0 {
		sf := w.spill[0]
		w.mu.Unlock()
		blk, err := readSpill(sf.path)
		w.mu.Lock()
		if err == nil {
			w.inflight = blk
			w.mu.Unlock()
			return blk, &sf
		}
		// A corrupt or unreadable file cannot be inserted: set it aside.
		w.m.errors.WithLabelValues(sf.table, "unspill").Inc()
		w.log.Error("spilled block unreadable, set aside", "file", sf.path, "error", err)
		_ = os.Rename(sf.path, sf.path+".bad")
		w.spill = w.spill[1:]
		w.spillSz -= sf.size
	}
	if len(w.queue) > 0 {
		blk := w.queue[0]
		w.inflight = blk
		w.mu.Unlock()
		return blk, nil
	}
	w.mu.Unlock()
	return nil, nil
}

// insert inserts blk, retrying with exponential backoff until it succeeds
// (true) or the writer is told to give up (false).
func (w *Writer) insert(blk *Block) bool {
	backoff := w.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(w.ctx, w.cfg.InsertTimeout)
		err := w.ins.Insert(ctx, blk)
		cancel()
		w.mu.Lock()
		w.failing = err != nil
		w.mu.Unlock()
		if err == nil {
			if attempt > 1 {
				w.log.Info("insert succeeded after retries", "table", blk.Table, "attempts", attempt)
			}
			return true
		}
		if w.ctx.Err() != nil {
			return false
		}
		w.m.errors.WithLabelValues(blk.Table, "insert").Inc()
		if attempt == 1 || attempt%10 == 0 {
			w.log.Warn("insert failed, will retry", "table", blk.Table, "attempts", attempt, "error", err)
		}
		w.spillQueued()
		select {
		case <-time.After(backoff):
		case <-w.ctx.Done():
			return false
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}

// spillQueued moves queued blocks to the spill directory: all but the one
// being inserted when memory is above half its bound or writers wait, and
// those a Sync waits for (the one being inserted included).
func (w *Writer) spillQueued() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.spillLocked()
}

func (w *Writer) spillLocked() {
	if w.cfg.SpillDir == "" {
		return
	}
	pressure := w.memRows*2 >= w.cfg.MaxBufferedRows
	if !pressure && (len(w.queue) == 0 || w.queue[0].seq > w.syncSeq) {
		return
	}
	if pressure {
		for t := range w.bufs {
			w.cutLocked(t)
		}
	}
	keep := w.queue[:0:0]
	for _, blk := range w.queue {
		wanted := blk.seq <= w.syncSeq || (pressure && blk != w.inflight)
		if !wanted || w.spillSz >= w.cfg.MaxSpillBytes {
			keep = append(keep, blk)
			continue
		}
		sf, err := w.writeSpill(blk)
		if err != nil {
			w.m.errors.WithLabelValues(blk.Table, "spill").Inc()
			w.log.Error("spill block failed", "table", blk.Table, "error", err)
			keep = append(keep, blk)
			continue
		}
		if blk == w.inflight {
			// The insert loop keeps retrying it from memory, and removes
			// the file once it is inserted. It is the oldest block.
			blk.spillPath = sf.path
			w.spill = append([]spillFile{sf}, w.spill...)
		} else {
			w.spill = append(w.spill, sf)
		}
		w.spillSz += sf.size
		w.memRows -= blk.Rows()
	}
	if len(keep) != len(w.queue) {
		w.queue = keep
		w.freedLocked()
	}
	w.updateGaugesLocked()
}

// writeSpill writes blk to the spill directory atomically and durably
// (file and directory fsynced).
func (w *Writer) writeSpill(blk *Block) (spillFile, error) {
	data, err := encodeBlock(blk)
	if err != nil {
		return spillFile{}, err
	}
	if err := durable.MkdirAll(w.cfg.SpillDir, 0o700); err != nil {
		return spillFile{}, err
	}
	name := fmt.Sprintf("%019d-%s-%s.blk", blk.Created.UnixNano(), blk.Table, blk.Token)
	path := filepath.Join(w.cfg.SpillDir, name)
	if err := durable.WriteFile(path, data, 0o600); err != nil {
		return spillFile{}, err
	}
	return spillFile{path: path, table: blk.Table, rows: blk.Rows(), size: int64(len(data)), created: blk.Created}, nil
}

func readSpill(path string) (*Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeBlock(data)
}

// loadSpill picks up blocks spilled by an earlier run, oldest first.
func (w *Writer) loadSpill() error {
	ents, err := os.ReadDir(w.cfg.SpillDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read spill directory: %w", err)
	}
	var files []spillFile
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".blk") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		parts := strings.SplitN(name, "-", 3)
		tbl := ""
		if len(parts) == 3 {
			tbl = parts[1]
		}
		files = append(files, spillFile{path: filepath.Join(w.cfg.SpillDir, name), table: tbl, size: info.Size(), created: info.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	w.mu.Lock()
	w.spill = append(files, w.spill...)
	for _, f := range files {
		w.spillSz += f.size
	}
	w.updateGaugesLocked()
	w.mu.Unlock()
	if len(files) > 0 {
		w.log.Info("found spilled blocks from an earlier run", "blocks", len(files))
	}
	return nil
}

func (w *Writer) updateGaugesLocked() {
	w.m.spillBytes.Set(float64(w.spillSz))
	w.m.spillBlocks.Set(float64(len(w.spill)))
	oldest := lag.New()
	for _, b := range w.bufs {
		oldest.See(b.Table, b.Created)
	}
	for _, b := range w.queue {
		oldest.See(b.Table, b.Created)
	}
	for _, f := range w.spill {
		oldest.See(f.table, f.created)
	}
	oldest.Report(w.m.lag, time.Now(), table.Flows, table.Pairs, table.Candidates)
}

// Sync implements sink.Writer: it cuts every table's buffer into a block
// and returns once those blocks, and all blocks cut before, are inserted
// or spilled to SpillDir (file and directory fsynced). Later Writes do not
// delay it. While inserts fail, Sync spills the blocks it waits for at
// once (within MaxSpillBytes), so that an outage does not hold up the
// caller; without a spill directory, or with a full one, it waits for the
// server (inserts are retried without limit while the Writer runs) and
// returns ctx.Err() when ctx ends first, the blocks staying queued.
func (w *Writer) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopping {
		return ErrStopped
	}
	if w.ctx == nil {
		return ErrNotStarted
	}
	for t := range w.bufs {
		w.cutLocked(t)
	}
	target := w.seq
	if len(w.queue) == 0 || w.queue[0].seq > target {
		return nil
	}
	w.syncSeq = max(w.syncSeq, target)
	w.kick()
	if w.failing {
		w.spillLocked()
	}
	for {
		switch {
		case w.lostErr != nil:
			return w.lostErr
		case len(w.queue) == 0 || w.queue[0].seq > target:
			return nil
		}
		if err := w.space.Wait(ctx, &w.mu); err != nil {
			return err
		}
	}
}

// Stop refuses further writes, inserts everything buffered (waiting at
// most InsertTimeout while inserts fail), then spills what is left to
// SpillDir, where the next Start picks it up. It returns an error when
// rows could be neither inserted nor spilled. Stop is idempotent.
func (w *Writer) Stop() error {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.stopping = true
		started := w.ctx != nil
		w.freedLocked() // release waiting writers: they get ErrStopped
		w.mu.Unlock()
		if started {
			w.kick()
			timer := time.AfterFunc(w.cfg.InsertTimeout, w.cancel)
			<-w.done
			timer.Stop()
			w.cancel()
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for t := range w.bufs {
			w.cutLocked(t)
		}
		lost := 0
		for _, blk := range w.queue {
			if w.cfg.SpillDir == "" {
				lost += blk.Rows()
				continue
			}
			sf, err := w.writeSpill(blk)
			if err != nil {
				w.m.errors.WithLabelValues(blk.Table, "spill").Inc()
				lost += blk.Rows()
				continue
			}
			w.spill = append(w.spill, sf)
			w.spillSz += sf.size
		}
		if n := len(w.queue); n > 0 && lost == 0 {
			w.log.Warn("clickhouse unavailable at stop, blocks spilled for the next start", "blocks", n)
		}
		w.queue = nil
		w.memRows = 0
		w.stopped = true
		var errs []error
		if lost > 0 {
			w.lostErr = fmt.Errorf("clickhouse sink: %d rows could not be inserted or spilled", lost)
			errs = append(errs, w.lostErr)
		}
		w.freedLocked() // wake Syncs still waiting
		w.updateGaugesLocked()
		if w.ins != nil {
			if err := w.ins.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close clickhouse connection: %w", err))
			}
		}
		w.stopErr = errors.Join(errs...)
	})
	return w.stopErr
}
