package parquet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow/go/v15/parquet/file"
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

func keysOf(batches []flow.Batch) []rowKey {
	var out []rowKey
	for _, b := range batches {
		for _, f := range b.Flows {
			out = append(out, rowKey{b.ID, f.Bytes})
		}
	}
	return out
}

// onDisk returns how many times each flow row is in dir's flows table.
func onDisk(t *testing.T, dir string) map[rowKey]int {
	t.Helper()
	got := map[rowKey]int{}
	if _, err := os.Stat(filepath.Join(dir, table.Flows)); errors.Is(err, os.ErrNotExist) {
		return got
	}
	err := ReadFlows(context.Background(), dir, func(b flow.Batch) error {
		for _, f := range b.Flows {
			got[rowKey{b.ID, f.Bytes}]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// tableFiles returns the data files of a table and their total rows.
func tableFiles(t *testing.T, dir, tbl string) (files, rows int) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, tbl, "date=*", "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		r, err := file.OpenParquetFile(p, false)
		if err != nil {
			t.Fatal(err)
		}
		rows += int(r.NumRows())
		r.Close()
	}
	return len(paths), rows
}

// TestSync: rows written before Sync are in files renamed into place when
// Sync returns, for every table; a later Sync covers later rows.
func TestSync(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.RotateInterval = time.Hour // only Sync closes files
	w := start(t, cfg, nil)
	ctx := context.Background()
	// Two days: the batches straddle midnight UTC, so two open flows files.
	t0 := time.Date(2026, 3, 1, 23, 50, 0, 0, time.UTC)
	batches := sinktest.Flows(0, 3000, 250, t0)
	for round, part := range [][]flow.Batch{batches[:6], batches[6:]} {
		for _, b := range part {
			if err := w.WriteFlows(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.WritePairs(ctx, sinktest.Pairs(10, t0)); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteCandidates(ctx, sinktest.Candidates(5, t0)); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		got := onDisk(t, dir)
		want := keysOf(batches[:6])
		if round == 1 {
			want = keysOf(batches)
		}
		if len(got) != len(want) {
			t.Errorf("round %d: %d flow rows on disk after Sync, want %d", round, len(got), len(want))
		}
		for _, k := range want {
			if got[k] != 1 {
				t.Errorf("round %d: flow %d of batch %s on disk %d times after Sync, want once", round, k.n, k.id, got[k])
				break
			}
		}
		if _, rows := tableFiles(t, dir, table.Pairs); rows != 10*(round+1) {
			t.Errorf("round %d: %d pair rows on disk after Sync, want %d", round, rows, 10*(round+1))
		}
		if _, rows := tableFiles(t, dir, table.Candidates); rows != 5*(round+1) {
			t.Errorf("round %d: %d candidate rows on disk after Sync, want %d", round, rows, 5*(round+1))
		}
	}
	// Nothing to do: returns at once.
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSyncOutage: with the directory unwritable Sync waits until its
// context ends and returns the context's error; nothing is dropped, and
// after the repair Sync succeeds with every row on disk once.
func TestSyncOutage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := start(t, testConfig(dir), nil)
	ctx := context.Background()
	batches := sinktest.Flows(0, 2000, 200, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, b := range batches[:5] {
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
	// Writes go on during the outage, then the directory is repaired.
	for _, b := range batches[5:] {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Sync(sctx); err != nil {
		t.Fatalf("Sync after the repair: %v", err)
	}
	got := onDisk(t, dir)
	for _, k := range keysOf(batches) {
		if got[k] != 1 {
			t.Fatalf("flow %d on disk %d times after Sync, want once", k.n, got[k])
		}
	}
	if len(got) != 2000 {
		t.Errorf("%d rows on disk, want 2000", len(got))
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSyncWhileStopGivesUp: a Sync waiting on an unwritable directory
// fails (does not hang, does not report success) when Stop gives up.
func TestSyncWhileStopGivesUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dir)
	cfg.StopTimeout = 200 * time.Millisecond
	w := start(t, cfg, nil)
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
		if !errors.Is(err, ErrStopped) {
			t.Errorf("Sync = %v, want ErrStopped", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sync still waiting after Stop")
	}
}

// TestSyncConcurrentWrites: Writes go on from several goroutines while Syncs
// run. Every Sync finds on disk every row whose Write returned before it
// was called, and at the end every row is on disk exactly once.
func TestSyncConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.RotateInterval = 150 * time.Millisecond // rotation races with Sync too
	w := start(t, cfg, nil)
	ctx := context.Background()
	const producers = 3
	var (
		mu       sync.Mutex
		accepted []rowKey
		wg       sync.WaitGroup
	)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range sinktest.Flows(uint64(p), 6000, 100, t0) {
				if err := w.WriteFlows(ctx, b); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				accepted = append(accepted, keysOf([]flow.Batch{b})...)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond) // spread the writes over many Syncs
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	syncs, checked := 0, 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		mu.Lock()
		before := append([]rowKey(nil), accepted...)
		mu.Unlock()
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		syncs++
		if len(before) > 0 {
			checked++
		}
		got := onDisk(t, dir)
		for _, k := range before {
			if got[k] != 1 {
				t.Fatalf("Sync %d: flow %d of batch %s on disk %d times, want once", syncs, k.n, k.id, got[k])
			}
		}
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	got := onDisk(t, dir)
	if len(got) != producers*6000 || len(accepted) != producers*6000 {
		t.Errorf("%d distinct rows on disk, %d accepted, want %d", len(got), len(accepted), producers*6000)
	}
	for k, n := range got {
		if n != 1 {
			t.Fatalf("flow %d of batch %s on disk %d times", k.n, k.id, n)
		}
	}
	if checked < 3 {
		t.Errorf("only %d Syncs ran while rows were being written", checked)
	}
	files, _ := FlowFiles(dir)
	t.Logf("%d Syncs, %d of them after some Writes had returned; %d files", syncs, checked, len(files))
}

func TestSyncBeforeStartAndAfterStop(t *testing.T) {
	w, err := New(testConfig(t.TempDir()), Deps{})
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

// TestSyncCost documents what Sync costs: every Sync closes one file per
// table and day that has rows, however few, and fsyncs it and its
// directory. A checkpoint every few seconds therefore makes many small
// files (see docs/storage.md: a checkpoint interval of minutes).
func TestSyncCost(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	batches := sinktest.Flows(0, 20_000, 1000, t0)

	// One Sync per 1000-flow batch, with a pair and a candidate each time.
	dir := t.TempDir()
	w := start(t, testConfig(dir), nil)
	var syncTime time.Duration
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePairs(ctx, sinktest.Pairs(1, t0)); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteCandidates(ctx, sinktest.Candidates(1, t0)); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		syncTime += time.Since(began)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{table.Flows, table.Pairs, table.Candidates} {
		if n, _ := tableFiles(t, dir, tbl); n != len(batches) {
			t.Errorf("%s: %d files after %d Syncs, want one per Sync", tbl, n, len(batches))
		}
	}

	// The same flows with no Sync: one file.
	once := t.TempDir()
	w = start(t, testConfig(once), nil)
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	synced, single := dirBytes(t, filepath.Join(dir, table.Flows)), dirBytes(t, filepath.Join(once, table.Flows))
	t.Logf("%d Syncs (3 files each): %v per Sync; flows table %d bytes in %d files vs %d bytes in 1 file (%.1fx)",
		len(batches), syncTime/time.Duration(len(batches)), synced, len(batches), single, float64(synced)/float64(single))
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRedeliveryDropped: a batch written again (the bus redelivers after a
// rebalance) is not stored twice; the halves of a batch that ReadFlows
// returns split at midnight (same ID) are both stored when written again.
func TestRedeliveryDropped(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	w := start(t, testConfig(dir), reg)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 23, 55, 0, 0, time.UTC) // batch 1 crosses midnight
	batches := sinktest.Flows(0, 1000, 250, t0)
	// A late batch from another producer, after batch 1, for the first
	// day: it separates the halves of batch 1 in the files.
	late := sinktest.Flows(1, 100, 100, t0)
	batches = append(batches[:2:2], append(late, batches[2:]...)...)
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Redelivery of two batches, one of them after its file is on disk.
	for _, b := range []flow.Batch{batches[1], batches[4]} {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// A copy of a batch (say, one that another path rebuilt) is recognised
	// by content, not by identity.
	cp := flow.Batch{ID: batches[3].ID, Flows: append([]flow.Pseudo(nil), batches[3].Flows...)}
	if err := w.WriteFlows(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	got := onDisk(t, dir)
	for _, k := range keysOf(batches) {
		if got[k] != 1 {
			t.Fatalf("flow %d stored %d times, want once", k.n, got[k])
		}
	}
	if n := testutil.ToFloat64(w.m.duplicates); n != 3 {
		t.Errorf("ccflow_sink_duplicate_batches_total = %v, want 3", n)
	}

	// Replay the files into a second sink: the batch split at midnight comes
	// back as two batches with one ID, and both halves are stored.
	var back []flow.Batch
	if err := ReadFlows(ctx, dir, func(b flow.Batch) error { back = append(back, b); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(back) != len(batches)+1 {
		t.Fatalf("%d batches read back, want %d (one split at midnight)", len(back), len(batches)+1)
	}
	dir2 := t.TempDir()
	w2 := start(t, testConfig(dir2), nil)
	for _, b := range back {
		if err := w2.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w2.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(t, dir2); len(got) != 1100 {
		t.Errorf("%d rows stored from the replayed files, want 1100", len(got))
	}
	if n := testutil.ToFloat64(w2.m.duplicates); n != 0 {
		t.Errorf("replay: ccflow_sink_duplicate_batches_total = %v, want 0", n)
	}
}
