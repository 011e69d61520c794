package parquet

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	parquetfmt "github.com/apache/arrow/go/v15/parquet"
	"github.com/apache/arrow/go/v15/parquet/file"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/sink/sinktest"
	"github.com/ccflow/ccflow/sink/table"
)

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default configuration does not validate: %v", err)
	}
}

func testConfig(dir string) Config {
	c := DefaultConfig()
	c.Dir = dir
	c.RowGroupRows = 5000
	c.RetryInitial = 10 * time.Millisecond
	c.RetryMax = 50 * time.Millisecond
	c.StopTimeout = 5 * time.Second
	return c
}

func start(t *testing.T, cfg Config, reg prometheus.Registerer) *Writer {
	t.Helper()
	w, err := New(cfg, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w
}

func allFlows(batches []flow.Batch) []flow.Pseudo {
	var out []flow.Pseudo
	for _, b := range batches {
		out = append(out, b.Flows...)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	// Two days: the batches straddle midnight UTC.
	t0 := time.Date(2026, 3, 1, 23, 50, 0, 0, time.UTC)
	batches := sinktest.Flows(0, 2000, 100, t0)
	reg := prometheus.NewRegistry()
	w := start(t, testConfig(dir), reg)
	ctx := context.Background()
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WritePairs(ctx, sinktest.Pairs(30, t0)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteCandidates(ctx, sinktest.Candidates(20, t0)); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := w.WriteFlows(ctx, batches[0]); !errors.Is(err, ErrStopped) {
		t.Errorf("write after Stop = %v, want ErrStopped", err)
	}

	// Hive-style partitions, no temporary file left.
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() && strings.Contains(rel, "date=") {
			dirs = append(dirs, rel)
		}
		if !d.IsDir() && !isDataFile(d.Name()) {
			t.Errorf("unexpected file %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"beacon_pairs/date=2026-03-01", "beacon_pairs/date=2026-03-02", "cc_candidates/date=2026-03-01",
		"cc_candidates/date=2026-03-02", "flows/date=2026-03-01", "flows/date=2026-03-02"}
	if diff := cmp.Diff(dirs, want); diff != "" {
		t.Errorf("partitions (-got +want):\n%s", diff)
	}

	var got []flow.Batch
	if err := ReadFlows(ctx, dir, func(b flow.Batch) error { got = append(got, b); return nil }); err != nil {
		t.Fatal(err)
	}
	// The batch that straddles midnight comes back as two batches with the
	// same ID (documented); everything else is batch for batch.
	if diff := cmp.Diff(allFlows(got), allFlows(batches)); diff != "" {
		t.Errorf("flows read back (-got +want):\n%s", diff)
	}
	ids := map[flow.BatchID]int{}
	for _, b := range got {
		ids[b.ID] += len(b.Flows)
	}
	for _, b := range batches {
		if ids[b.ID] != len(b.Flows) {
			t.Errorf("batch %s: %d flows read back, want %d", b.ID, ids[b.ID], len(b.Flows))
		}
	}
	if n := testutil.ToFloat64(w.m.rows.WithLabelValues(table.Flows)); n != 2000 {
		t.Errorf("ccflow_sink_rows_total{table=flows} = %v, want 2000", n)
	}
	if n := testutil.ToFloat64(w.m.buffered); n != 0 {
		t.Errorf("ccflow_sink_buffered_rows = %v after Stop, want 0", n)
	}
	if _, err := testutil.GatherAndLint(reg); err != nil {
		t.Errorf("metrics lint: %v", err)
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.MaxFileBytes = 1 << 20
	cfg.MaxPendingBytes = 8 << 20
	cfg.RotateInterval = time.Second
	w := start(t, cfg, nil)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	// Rotation by size: 200k flows of an ISP's spread are well over 1 MiB
	// compressed (sinktest.Flows' cycles compress to 2 bytes a row).
	for _, b := range sinktest.Spread(0, 200_000, 1000, t0.Add(12*time.Hour)) {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Rotation by time: a small write appears within RotateInterval.
	if err := w.WriteCandidates(ctx, sinktest.Candidates(1, t0)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, _ := filepath.Glob(filepath.Join(dir, "cc_candidates", "date=*", "*.parquet"))
		if len(m) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("candidate file did not appear after rotate_interval")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	files, err := FlowFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Errorf("%d flow files, want rotation by size into several", len(files))
	}
}

// TestOutage makes the output directory unwritable (a file stands where
// the directory should be), keeps writing, then repairs it: every row
// accepted by a Write is on disk exactly once, and memory stayed bounded
// (writes waited instead).
func TestOutage(t *testing.T) {
	t.Run("unwritable directory", func(t *testing.T) {
		base := t.TempDir()
		dir := filepath.Join(base, "out")
		if err := os.WriteFile(dir, []byte("not a directory"), 0o644); err != nil {
			t.Fatal(err)
		}
		outage(t, dir, func() error {
			if err := os.Remove(dir); err != nil {
				return err
			}
			return os.Mkdir(dir, 0o755)
		})
	})
	t.Run("disk full", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "small")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A 16 MiB tmpfs filled up; needs root (CI runs as root).
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a small tmpfs here (%v: %s); the unwritable-directory case covers the outage", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
		filler := filepath.Join(dir, "filler")
		_ = os.WriteFile(filler, make([]byte, 32<<20), 0o644) // fails part-way: the disk is full
		outage(t, dir, func() error { return os.Remove(filler) })
	})
}

func outage(t *testing.T, dir string, repair func() error) {
	t.Helper()
	cfg := testConfig(dir)
	cfg.MaxFileBytes = 1 << 20
	cfg.MaxPendingBytes = 1 << 20
	cfg.RotateInterval = 200 * time.Millisecond
	cfg.RowGroupRows = 10000
	w := start(t, cfg, nil)

	var (
		mu       sync.Mutex
		accepted []flow.Batch
		peak     int64
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // sample the memory the sink holds
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			w.mu.Lock()
			if w.memBytes > peak {
				peak = w.memBytes
			}
			w.mu.Unlock()
		}
	}()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	// An ISP's spread, so that the outage fills the 1 MiB memory bound
	// (sinktest.Flows' cycles compress to 2 bytes a row); Bytes numbers the
	// flows, as in sinktest.Flows.
	batches := sinktest.Spread(1, 150_000, 1000, t0)
	for i := range batches {
		for j := range batches[i].Flows {
			batches[i].Flows[j].Bytes = uint64(i*1000 + j)
		}
	}
	blocked := 0
	produce := func(bs []flow.Batch) {
		for _, b := range bs {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err := w.WriteFlows(ctx, b)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				blocked++ // backpressure: the caller keeps the batch
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			accepted = append(accepted, b)
			mu.Unlock()
		}
	}
	produce(batches[:100]) // during the outage
	if blocked == 0 {
		t.Error("no write waited during the outage: memory is not bounded")
	}
	if err := repair(); err != nil {
		t.Fatal(err)
	}
	produce(batches[100:]) // after recovery
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-sampled
	// Writes are admitted below MaxPendingBytes; one more file and row
	// group may be in flight.
	if limit := cfg.MaxPendingBytes + 2*cfg.MaxFileBytes; peak > limit {
		t.Errorf("sink held %d bytes, bound %d", peak, limit)
	}
	t.Logf("outage: %d batches accepted, %d waited, peak memory %d bytes", len(accepted), blocked, peak)

	var got []flow.Pseudo
	if err := ReadFlows(context.Background(), dir, func(b flow.Batch) error { got = append(got, b.Flows...); return nil }); err != nil {
		t.Fatal(err)
	}
	want := allFlows(accepted)
	if len(got) != len(want) {
		t.Fatalf("%d rows on disk, %d accepted", len(got), len(want))
	}
	seen := map[uint64]int{}
	for _, f := range got {
		seen[f.Bytes]++ // sinktest puts the flow number in Bytes
	}
	for _, f := range want {
		if seen[f.Bytes] != 1 {
			t.Errorf("flow %d stored %d times, want once", f.Bytes, seen[f.Bytes])
		}
	}
}

// TestStopAfterCanceledContext: the run context ends first (SIGTERM), then
// Stop still writes everything.
func TestStopAfterCanceledContext(t *testing.T) {
	dir := t.TempDir()
	w, err := New(testConfig(dir), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	batches := sinktest.Flows(0, 3000, 300, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := ReadFlows(context.Background(), dir, func(b flow.Batch) error { n += len(b.Flows); return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 3000 {
		t.Errorf("%d flows on disk, want 3000", n)
	}
}

// TestFlowsFileLayout pins the encodings and codecs of props.go in the
// files: delta-packed times, no dictionary for bytes and sub_port, and with
// zstd, snappy for the times and the low-cardinality columns.
func TestFlowsFileLayout(t *testing.T) {
	for _, codec := range []string{"zstd", "snappy"} {
		t.Run(codec, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			cfg.Compression = codec
			w := start(t, cfg, nil)
			for _, b := range sinktest.Flows(0, 1000, 100, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) {
				if err := w.WriteFlows(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Stop(); err != nil {
				t.Fatal(err)
			}
			files, err := FlowFiles(dir)
			if err != nil || len(files) != 1 {
				t.Fatalf("flow files %v, %v; want one", files, err)
			}
			r, err := file.OpenParquetFile(files[0], false)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			type layout struct {
				Codec string
				Dict  bool
				Delta bool
			}
			got := map[string]layout{}
			rg := r.MetaData().RowGroup(0)
			for i := 0; i < rg.NumColumns(); i++ {
				c, err := rg.ColumnChunk(i)
				if err != nil {
					t.Fatal(err)
				}
				l := layout{Codec: strings.ToLower(c.Compression().String())}
				for _, e := range c.Encodings() {
					l.Dict = l.Dict || e == parquetfmt.Encodings.RLEDict
					l.Delta = l.Delta || e == parquetfmt.Encodings.DeltaBinaryPacked
				}
				got[c.PathInSchema().String()] = l
			}
			small := codec
			if codec == "zstd" {
				small = "snappy"
			}
			want := map[string]layout{
				flowarrow.ColTimeStart:  {Codec: small, Delta: true},
				flowarrow.ColTimeEnd:    {Codec: small, Delta: true},
				flowarrow.ColBytes:      {Codec: codec},
				flowarrow.ColSubPort:    {Codec: codec},
				flowarrow.ColSub:        {Codec: codec, Dict: true},
				flowarrow.ColRemoteAddr: {Codec: codec, Dict: true},
				flowarrow.ColExporter:   {Codec: small, Dict: true},
				flowarrow.ColKind:       {Codec: small, Dict: true},
				flowarrow.ColBatchID:    {Codec: small, Dict: true},
			}
			for col, wl := range want {
				if diff := cmp.Diff(got[col], wl); diff != "" {
					t.Errorf("column %s (-got +want):\n%s", col, diff)
				}
			}
		})
	}
}
