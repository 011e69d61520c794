package parquet

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ccflow/ccflow/sink/sinktest"
)

// BenchmarkWriteFlows measures flows/s into Parquet files (zstd) on one
// goroutine, including the disk writes at Stop: `go test -run '^$' -bench
// WriteFlows -benchtime 5x ./sink/parquet`.
func BenchmarkWriteFlows(b *testing.B) {
	for _, codec := range []string{"zstd", "snappy"} {
		b.Run(fmt.Sprintf("codec=%s", codec), func(b *testing.B) {
			batches := sinktest.Flows(0, 200_000, 1000, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
			b.ReportAllocs()
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
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
			// CPU seconds of the whole process (all goroutines, GC included):
			// rows per CPU-second is rows/s per core.
			b.ReportMetric(float64(rows)/(cpuTime()-cpu0).Seconds(), "rows/cpu-s")
			b.ReportMetric(float64(bytes)/float64(rows), "B/row")
		})
	}
}

// cpuTime returns the user+system CPU time of the process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
