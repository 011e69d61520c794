package clickhouse

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/sinktest"
	"github.com/ccflow/ccflow/sink/table"
)

// memInserter is a unit-test stand-in for the connection (the real server
// test is clickhouse_integration_test.go). It stores blocks by token the
// way ClickHouse's deduplication does, can be made to fail, and can fail
// after storing (a lost acknowledgement).
type memInserter struct {
	mu       sync.Mutex
	down     bool
	lostAcks int // fail this many inserts after storing them
	stored   map[string]*Block
	order    []string
	attempts int
}

func newMemInserter() *memInserter { return &memInserter{stored: map[string]*Block{}} }

func (m *memInserter) Insert(ctx context.Context, b *Block) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts++
	if m.down {
		return errors.New("connection refused")
	}
	if _, dup := m.stored[b.Token]; !dup {
		m.stored[b.Token] = b
		m.order = append(m.order, b.Token)
	}
	if m.lostAcks > 0 {
		m.lostAcks--
		return errors.New("read: connection reset by peer")
	}
	return nil
}

func (m *memInserter) Close() error { return nil }

func (m *memInserter) setDown(d bool) {
	m.mu.Lock()
	m.down = d
	m.mu.Unlock()
}

func (m *memInserter) rows(tbl string) map[uint64]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[uint64]int{}
	for _, b := range m.stored {
		if b.Table != tbl {
			continue
		}
		for _, f := range b.Flows {
			out[f.Bytes]++
		}
		for _, c := range b.Candidates {
			out[c.Bytes]++
		}
	}
	return out
}

func testConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.DSN = "clickhouse://127.0.0.1:9/none"
	c.BatchRows = 1000
	c.BatchInterval = 50 * time.Millisecond
	c.MaxBufferedRows = 4000
	c.SpillDir = t.TempDir()
	c.RetryInitial = 5 * time.Millisecond
	c.RetryMax = 20 * time.Millisecond
	c.InsertTimeout = time.Second
	return c
}

func startWriter(t *testing.T, cfg Config, ins Inserter, reg prometheus.Registerer) *Writer {
	t.Helper()
	w, err := New(cfg, Deps{Inserter: ins, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWriterBatchesAndDeduplicates(t *testing.T) {
	ins := newMemInserter()
	ins.lostAcks = 2 // the first two inserts are stored but look failed
	reg := prometheus.NewRegistry()
	w := startWriter(t, testConfig(t), ins, reg)
	ctx := context.Background()
	batches := sinktest.Flows(0, 5500, 500, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteCandidates(ctx, sinktest.Candidates(7, time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	got := ins.rows(table.Flows)
	if len(got) != 5500 {
		t.Errorf("%d distinct flows stored, want 5500", len(got))
	}
	for k, n := range got {
		if n != 1 {
			t.Errorf("flow %d stored %d times", k, n)
		}
	}
	if n := len(ins.rows(table.Candidates)); n != 7 {
		t.Errorf("%d candidates stored, want 7", n)
	}
	// Blocks of batch_rows (the last one cut by time or at stop).
	for _, tok := range ins.order {
		if b := ins.stored[tok]; b.Table == table.Flows && b.Rows() > 1000 {
			t.Errorf("block of %d rows, batch_rows is 1000", b.Rows())
		}
	}
	if n := testutil.ToFloat64(w.m.rows.WithLabelValues(table.Flows)); n != 5500 {
		t.Errorf("ccflow_sink_rows_total{table=flows} = %v, want 5500", n)
	}
	if n := testutil.ToFloat64(w.m.errors.WithLabelValues(table.Flows, "insert")); n != 2 {
		t.Errorf("insert errors = %v, want 2", n)
	}
	if _, err := testutil.GatherAndLint(reg); err != nil {
		t.Errorf("metrics lint: %v", err)
	}
}

func TestTokenIsStableAndSafe(t *testing.T) {
	w, err := New(testConfig(t), Deps{Inserter: newMemInserter()})
	if err != nil {
		t.Fatal(err)
	}
	a := &Block{Table: table.Flows, FlowIDs: []IDRun{{ID: sinktest.BatchID(0, 1), N: 3}}}
	b := &Block{Table: table.Flows, FlowIDs: []IDRun{{ID: sinktest.BatchID(0, 1), N: 3}}}
	if w.token(a) != w.token(b) {
		t.Error("same batches, different tokens")
	}
	b.FlowIDs[0].N = 4
	if w.token(a) == w.token(b) {
		t.Error("different row counts, same token")
	}
	// Batches without IDs must never share a token.
	z1 := &Block{Table: table.Flows, FlowIDs: []IDRun{{N: 3}}}
	w.seq++
	t1 := w.token(z1)
	w.seq++
	if t1 == w.token(z1) {
		t.Error("blocks without batch IDs share a token")
	}
}

// TestOutageSpillsAndRecovers takes the server down, keeps writing past the
// memory bound (blocks spill to disk, writes do not wait while the spill
// directory has room), stops the writer while the server is still down
// (the rest spills), then starts a new writer on the same spill directory
// with the server up: every row is stored exactly once.
func TestOutageSpillsAndRecovers(t *testing.T) {
	cfg := testConfig(t)
	ins := newMemInserter()
	ins.setDown(true)
	w := startWriter(t, cfg, ins, nil)
	ctx := context.Background()
	batches := sinktest.Flows(0, 20000, 500, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, b := range batches {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := w.WriteFlows(wctx, b)
		cancel()
		if err != nil {
			t.Fatalf("write during outage: %v", err)
		}
		w.mu.Lock()
		if w.memRows > cfg.MaxBufferedRows {
			t.Errorf("%d rows in memory, bound %d", w.memRows, cfg.MaxBufferedRows)
		}
		w.mu.Unlock()
	}
	if n := testutil.ToFloat64(w.m.spillBytes); n == 0 {
		t.Error("nothing spilled during the outage")
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if len(ins.stored) != 0 {
		t.Fatalf("%d blocks stored while the server was down", len(ins.stored))
	}
	files, _ := os.ReadDir(cfg.SpillDir)
	t.Logf("%d spilled blocks after stop", len(files))

	ins.setDown(false)
	ins.lostAcks = 3
	w2 := startWriter(t, cfg, ins, nil)
	deadline := time.Now().Add(10 * time.Second)
	for len(ins.rows(table.Flows)) < 20000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := w2.Stop(); err != nil {
		t.Fatal(err)
	}
	got := ins.rows(table.Flows)
	if len(got) != 20000 {
		t.Errorf("%d distinct flows stored, want 20000", len(got))
	}
	for k, n := range got {
		if n != 1 {
			t.Errorf("flow %d stored %d times", k, n)
		}
	}
	if files, _ := os.ReadDir(cfg.SpillDir); len(files) != 0 {
		t.Errorf("%d files left in the spill directory", len(files))
	}
}

// TestBackpressureWithoutSpill: with no spill directory, writes wait once
// memory is full, and give up with the caller's context.
func TestBackpressureWithoutSpill(t *testing.T) {
	cfg := testConfig(t)
	cfg.SpillDir = ""
	ins := newMemInserter()
	ins.setDown(true)
	w := startWriter(t, cfg, ins, nil)
	var waited error
	for _, b := range sinktest.Flows(0, 10000, 500, time.Now()) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := w.WriteFlows(ctx, b)
		cancel()
		if err != nil {
			waited = err
			break
		}
	}
	if !errors.Is(waited, context.DeadlineExceeded) {
		t.Fatalf("write with full memory = %v, want DeadlineExceeded", waited)
	}
	ins.setDown(false)
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(ins.rows(table.Flows)); n != cfg.MaxBufferedRows {
		t.Errorf("%d rows stored, want the %d accepted", n, cfg.MaxBufferedRows)
	}
	if err := w.WriteFlows(context.Background(), flow.Batch{Flows: make([]flow.Pseudo, 1)}); !errors.Is(err, ErrStopped) {
		t.Errorf("write after stop = %v, want ErrStopped", err)
	}
}

func TestSpillRoundTrip(t *testing.T) {
	b := &Block{Table: table.Candidates, Token: "t", Created: time.Unix(5, 0), Candidates: sinktest.Candidates(3, time.Unix(0, 0))}
	data, err := encodeBlock(b)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeBlock(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.Token != "t" || len(back.Candidates) != 3 || back.Candidates[0].RemoteAddr != sinktest.Endpoint || back.Candidates[0].Intel[0] != "feodo" {
		t.Errorf("block changed through spill: %+v", back.Candidates[0])
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
