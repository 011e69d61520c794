package clickhouse

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/sinktest"
	"github.com/ccflow/ccflow/sink/table"
)

// rowKey names one flow row across producers: sinktest puts the flow's
// number in Bytes, and each producer has its own batch IDs.
type rowKey struct {
	id flow.BatchID
	n  uint64
}

func keysOf(batches ...flow.Batch) []rowKey {
	var out []rowKey
	for _, b := range batches {
		for _, f := range b.Flows {
			out = append(out, rowKey{b.ID, f.Bytes})
		}
	}
	return out
}

// blockKeys adds the flow rows of b to m.
func blockKeys(m map[rowKey]int, b *Block) {
	i := 0
	for _, run := range b.FlowIDs {
		for j := 0; j < run.N; j++ {
			m[rowKey{run.ID, b.Flows[i].Bytes}]++
			i++
		}
	}
}

// spilled returns the flow rows in the spill directory's block files.
func spilled(t *testing.T, dir string) map[rowKey]int {
	t.Helper()
	out := map[rowKey]int{}
	paths, err := filepath.Glob(filepath.Join(dir, "*.blk"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		blk, err := readSpill(p)
		if errors.Is(err, os.ErrNotExist) {
			continue // inserted and removed meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		blockKeys(out, blk)
	}
	return out
}

// inserted returns the flow rows the stand-in server holds.
func (m *memInserter) flowKeys() map[rowKey]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[rowKey]int{}
	for _, b := range m.stored {
		if b.Table == table.Flows {
			blockKeys(out, b)
		}
	}
	return out
}

// durableRows returns the rows that are inserted or spilled. The spill is
// read first: a block removed from it meanwhile was inserted before.
func durableRows(t *testing.T, ins *memInserter, spillDir string) map[rowKey]int {
	t.Helper()
	out := map[rowKey]int{}
	if spillDir != "" {
		out = spilled(t, spillDir)
	}
	for k, n := range ins.flowKeys() {
		out[k] += n
	}
	return out
}

func syncConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.BatchInterval = time.Hour // only batch_rows and Sync cut blocks
	cfg.MaxBufferedRows = 100_000 // no spill for memory
	return cfg
}

// TestSync: rows written before Sync are inserted when Sync returns, both
// those still in a table's buffer and those in blocks already cut.
func TestSync(t *testing.T) {
	ins := newMemInserter()
	w := startWriter(t, syncConfig(t), ins, nil)
	ctx := context.Background()
	batches := sinktest.Flows(0, 2500, 250, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for round, part := range [][]flow.Batch{batches[:5], batches[5:]} {
		for _, b := range part {
			if err := w.WriteFlows(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.WriteCandidates(ctx, sinktest.Candidates(3, time.Now())); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		got := ins.flowKeys()
		for _, k := range keysOf(batches[:5*(round+1)]...) {
			if got[k] != 1 {
				t.Fatalf("round %d: flow %d stored %d times after Sync, want once", round, k.n, got[k])
			}
		}
		n := 0
		for _, c := range ins.rows(table.Candidates) {
			n += c
		}
		if n != 3*(round+1) {
			t.Errorf("round %d: %d candidates stored after Sync, want %d", round, n, 3*(round+1))
		}
	}
	if err := w.Sync(ctx); err != nil { // nothing to do
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSyncOutageSpills: with the server down, Sync spills the blocks it
// waits for (the one being retried included) and returns; when the server
// is back, everything is inserted once and the spill directory empties.
func TestSyncOutageSpills(t *testing.T) {
	cfg := syncConfig(t)
	ins := newMemInserter()
	ins.setDown(true)
	w := startWriter(t, cfg, ins, nil)
	ctx := context.Background()
	batches := sinktest.Flows(0, 3500, 500, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Sync(sctx); err != nil {
		t.Fatalf("Sync during the outage: %v", err)
	}
	got := spilled(t, cfg.SpillDir)
	for _, k := range keysOf(batches...) {
		if got[k] != 1 {
			t.Fatalf("flow %d in the spill %d times after Sync, want once", k.n, got[k])
		}
	}
	if n := len(ins.flowKeys()); n != 0 {
		t.Fatalf("%d rows stored while the server was down", n)
	}
	// A second Sync during the outage (new rows, failing state known).
	more := sinktest.Flows(1, 300, 300, time.Now())
	if err := w.WriteFlows(ctx, more[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(sctx); err != nil {
		t.Fatalf("second Sync during the outage: %v", err)
	}
	if got := spilled(t, cfg.SpillDir); len(got) != 3800 {
		t.Fatalf("%d rows spilled after the second Sync, want 3800", len(got))
	}

	ins.setDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for len(ins.flowKeys()) < 3800 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	stored := ins.flowKeys()
	for _, k := range keysOf(append(batches, more...)...) {
		if stored[k] != 1 {
			t.Fatalf("flow %d of batch %s stored %d times, want once", k.n, k.id, stored[k])
		}
	}
	if files, _ := os.ReadDir(cfg.SpillDir); len(files) != 0 {
		t.Errorf("%d files left in the spill directory", len(files))
	}
}

// TestSyncOutageWithoutSpill: with no spill directory Sync waits for the
// server until its context ends; nothing is dropped.
func TestSyncOutageWithoutSpill(t *testing.T) {
	cfg := syncConfig(t)
	cfg.SpillDir = ""
	ins := newMemInserter()
	ins.setDown(true)
	w := startWriter(t, cfg, ins, nil)
	ctx := context.Background()
	batches := sinktest.Flows(0, 2000, 500, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	began := time.Now()
	err := w.Sync(sctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync during the outage = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Errorf("Sync returned after %v, before its context ended", d)
	}
	ins.setDown(false)
	sctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	got := ins.flowKeys()
	for _, k := range keysOf(batches...) {
		if got[k] != 1 {
			t.Fatalf("flow %d stored %d times, want once", k.n, got[k])
		}
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSyncWhileStopLoses: a Sync waiting for a down server with nowhere to
// spill fails when Stop cannot store its rows (it does not report success).
func TestSyncWhileStopLoses(t *testing.T) {
	cfg := syncConfig(t)
	cfg.SpillDir = ""
	cfg.InsertTimeout = 200 * time.Millisecond
	ins := newMemInserter()
	ins.setDown(true)
	w := startWriter(t, cfg, ins, nil)
	if err := w.WriteFlows(context.Background(), sinktest.Flows(0, 10, 10, time.Now())[0]); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- w.Sync(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	if err := w.Stop(); err == nil {
		t.Error("Stop reported no lost rows")
	}
	select {
	case err := <-res:
		if err == nil || !strings.Contains(err.Error(), "could not be inserted or spilled") {
			t.Errorf("Sync = %v, want the rows reported lost", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sync still waiting after Stop")
	}
}

// TestSyncConcurrentWrites: Writes go on from several goroutines while Syncs
// run and the server flaps. Every Sync finds inserted or spilled every row
// whose Write returned before it was called; at the end every row is
// inserted exactly once.
func TestSyncConcurrentWrites(t *testing.T) {
	cfg := syncConfig(t)
	cfg.BatchRows = 700
	ins := newMemInserter()
	w := startWriter(t, cfg, ins, nil)
	ctx := context.Background()
	const producers, perProducer = 3, 6000
	var (
		mu       sync.Mutex
		accepted []rowKey
		wg       sync.WaitGroup
	)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range sinktest.Flows(uint64(p), perProducer, 100, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) {
				if err := w.WriteFlows(ctx, b); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				accepted = append(accepted, keysOf(b)...)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	flapDone := make(chan struct{})
	go func() { // the server goes down and up
		defer close(flapDone)
		for down := true; ; down = !down {
			select {
			case <-done:
				ins.setDown(false)
				return
			case <-time.After(15 * time.Millisecond):
			}
			ins.setDown(down)
		}
	}()
	checked := 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		mu.Lock()
		before := append([]rowKey(nil), accepted...)
		mu.Unlock()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := w.Sync(sctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if len(before) > 0 {
			checked++
		}
		got := durableRows(t, ins, cfg.SpillDir)
		for _, k := range before {
			if got[k] == 0 {
				t.Fatalf("Sync %d: flow %d of batch %s neither inserted nor spilled", checked, k.n, k.id)
			}
		}
		time.Sleep(3 * time.Millisecond)
	}
	<-flapDone
	if checked < 5 {
		t.Errorf("only %d Syncs ran while rows were being written", checked)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(ins.flowKeys()) < producers*perProducer && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	stored := ins.flowKeys()
	if len(stored) != producers*perProducer || len(accepted) != producers*perProducer {
		t.Errorf("%d distinct rows stored, %d accepted, want %d", len(stored), len(accepted), producers*perProducer)
	}
	for k, n := range stored {
		if n != 1 {
			t.Fatalf("flow %d of batch %s stored %d times", k.n, k.id, n)
		}
	}
	if files, _ := os.ReadDir(cfg.SpillDir); len(files) != 0 {
		t.Errorf("%d files left in the spill directory", len(files))
	}
	t.Logf("%d Syncs checked, %d insert attempts for %d blocks", checked, ins.attempts, len(ins.stored))
}

func TestSyncBeforeStartAndAfterStop(t *testing.T) {
	w, err := New(testConfig(t), Deps{Inserter: newMemInserter()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Sync before Start = %v, want ErrNotStarted", err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Sync after Stop = %v, want ErrStopped", err)
	}
}

// TestRedeliveryDropped: batches written again in another grouping (the
// server's token would not match) are dropped by the writer and counted.
func TestRedeliveryDropped(t *testing.T) {
	ins := newMemInserter()
	reg := prometheus.NewRegistry()
	w := startWriter(t, syncConfig(t), ins, reg)
	ctx := context.Background()
	batches := sinktest.Flows(0, 3000, 300, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Redelivered from the middle on, so the blocks group them otherwise.
	for _, b := range batches[5:] {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// A batch without an ID is never dropped.
	anon := sinktest.Flows(9, 10, 10, time.Now())[0]
	anon.ID = flow.BatchID{}
	for range 2 {
		if err := w.WriteFlows(ctx, anon); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	got := ins.flowKeys()
	for _, k := range keysOf(batches...) {
		if got[k] != 1 {
			t.Fatalf("flow %d stored %d times, want once", k.n, got[k])
		}
	}
	for _, k := range keysOf(anon) {
		if got[k] != 2 {
			t.Fatalf("flow %d of a batch without ID stored %d times, want twice", k.n, got[k])
		}
	}
	if n := testutil.ToFloat64(w.m.duplicates); n != 5 {
		t.Errorf("ccflow_sink_duplicate_batches_total = %v, want 5", n)
	}
	if _, err := testutil.GatherAndLint(reg); err != nil {
		t.Errorf("metrics lint: %v", err)
	}
}
