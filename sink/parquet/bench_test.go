package parquet

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/sinktest"
)

// BenchmarkWriteFlows measures flows/s into Parquet files on one goroutine,
// including the disk writes at Stop, for two data sets of 200k flows:
// data=cycles is sinktest.Flows (short cycles, one second apart: three
// days, so three files; it compresses far better than traffic does) and
// data=spread is sinktest.Spread (an ISP's spread, 40 seconds of flows: one
// file). `go test -run '^$' -bench WriteFlows -benchtime 5x ./sink/parquet`.
func BenchmarkWriteFlows(b *testing.B) {
	sets := []struct {
		name    string
		batches []flow.Batch
	}{
		{"cycles", sinktest.Flows(0, 200_000, 1000, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))},
		{"spread", sinktest.Spread(1, 200_000, 1000, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))},
	}
	for _, set := range sets {
		for _, codec := range []string{"zstd", "snappy"} {
			b.Run(fmt.Sprintf("data=%s/codec=%s", set.name, codec), func(b *testing.B) {
				benchWriteFlows(b, set.batches, codec)
			})
		}
	}
}

func benchWriteFlows(b *testing.B, batches []flow.Batch, codec string) {
	b.ReportAllocs()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime()
	b.ResetTimer()
	rows, bytes := 0, int64(0)
	for i := 0; i < b.N; i++ {
		cfg := DefaultConfig()
		cfg.Dir = b.TempDir()
		cfg.Compression = codec
		w, err := New(cfg, Deps{})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		if err := w.Start(ctx); err != nil {
			b.Fatal(err)
		}
		for _, bt := range batches {
			if err := w.WriteFlows(ctx, bt); err != nil {
				b.Fatal(err)
			}
			rows += len(bt.Flows)
		}
		if err := w.Stop(); err != nil {
			b.Fatal(err)
		}
		files, _ := FlowFiles(cfg.Dir)
		for _, f := range files {
			if st, err := os.Stat(f); err == nil {
				bytes += st.Size()
			}
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
	// CPU seconds of the whole process (all goroutines, GC included):
	// rows per CPU-second is rows/s per core.
	b.ReportMetric(float64(rows)/cpu.Seconds(), "rows/cpu-s")
	b.ReportMetric(float64(bytes)/float64(rows), "B/row")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(rows), "allocB/row")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(rows), "allocs/row")
}

// cpuTime returns the user+system CPU time of the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
