package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ccflow/ccflow/detect/detecttest"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/parquet"
	"github.com/ccflow/ccflow/testenv"
)

// TestResearcherRoundTrip is issue 8's round trip: a capture replayed with
// the Parquet sink, then `ccflow replay --format parquet` on the sink's
// flows/ table (pseudonymized, no key given) yields the same candidates as
// the first run.
func TestResearcherRoundTrip(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "export")
	first, second := filepath.Join(dir, "first.jsonl"), filepath.Join(dir, "second.jsonl")
	if _, stderr, err := ccflow(t, "replay", "--format", "zeek", "--subscribers", "192.168.1.0/24", "--keys", filepath.Join(dir, "keys"),
		"--start", "2017-03-08T13:47:04Z", "--parquet-dir", data, "--out", first, testenv.Data(t, detecttest.NjRATPath...)); err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	var rows int
	if err := parquet.ReadFlows(context.Background(), filepath.Join(data, "flows"), func(b flow.Batch) error {
		rows += len(b.Flows)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if rows == 0 {
		t.Fatal("the first replay stored no flows")
	}
	// The researcher has only the export: no --keys, no --subscribers.
	if _, stderr, err := ccflow(t, "replay", "--format", "parquet", "--out", second, filepath.Join(data, "flows")); err != nil {
		t.Fatalf("replay --format parquet: %v\n%s", err, stderr)
	}
	a, b := readJSONL(t, first), readJSONL(t, second)
	if len(a) == 0 {
		t.Fatal("the first replay found no candidates")
	}
	if d := cmp.Diff(a, b, cmpopts.EquateComparable(netip.Addr{})); d != "" {
		t.Errorf("candidates differ between the capture and its Parquet export (-first +second):\n%s", d)
	}
	t.Logf("%d flows exported, %d candidates in both runs", rows, len(a))
}
