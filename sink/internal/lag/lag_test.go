package lag

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReport(t *testing.T) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lag_seconds"}, []string{"table"})
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	o := New()
	o.See("flows", now.Add(-5*time.Second))
	o.See("flows", now.Add(-30*time.Second)) // older: wins
	o.See("flows", now.Add(-1*time.Second))  // newer: ignored
	o.See("beacon_pairs", now.Add(-2*time.Second))
	// A table seen in an earlier report and empty now must drop to 0.
	g.WithLabelValues("cc_candidates").Set(99)
	o.Report(g, now, "flows", "beacon_pairs", "cc_candidates")

	for table, want := range map[string]float64{"flows": 30, "beacon_pairs": 2, "cc_candidates": 0} {
		if got := testutil.ToFloat64(g.WithLabelValues(table)); got != want {
			t.Errorf("lag{table=%q} = %v, want %v", table, got, want)
		}
	}
}
