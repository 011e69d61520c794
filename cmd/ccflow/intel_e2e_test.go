package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ccflow/ccflow/detect/detecttest"
	"github.com/ccflow/ccflow/testenv"
)

// TestReplayIntelList runs the real enrichment stage between privacy and
// the detector: NjRAT replayed with an intel list (--intel) that contains
// its C&C server yields a candidate that names the list, scores above the
// same replay without the list, and carries the intel component.
func TestReplayIntelList(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "c2.txt")
	if err := os.WriteFile(list, []byte("# test list\n41.108.179.0/24\n198.51.100.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	replayTo := func(out string, extra ...string) {
		args := append([]string{"replay", "--format", "zeek", "--subscribers", "192.168.1.0/24", "--keys", filepath.Join(dir, "keys"),
			"--start", "2017-03-08T13:47:04Z", "--out", out}, extra...)
		if _, stderr, err := ccflow(t, append(args, testenv.Data(t, detecttest.NjRATPath...))...); err != nil {
			t.Fatalf("replay: %v\n%s", err, stderr)
		}
	}
	plain, listed := filepath.Join(dir, "plain.jsonl"), filepath.Join(dir, "listed.jsonl")
	replayTo(plain)
	replayTo(listed, "--intel", "c2="+list)

	best := func(path string) (score float64, intel []string, explanation string, ic float64) {
		for _, c := range readJSONL(t, path) {
			if c.RemoteAddr.String() == "41.108.179.197" && c.RemotePort == 1177 && c.Score > score {
				score, intel, explanation, ic = c.Score, c.Intel, c.Explanation, c.Components.Intel
			}
		}
		return
	}
	s0, i0, _, _ := best(plain)
	s1, i1, e1, c1 := best(listed)
	if s0 == 0 || s1 == 0 {
		t.Fatalf("NjRAT C&C not a candidate (scores %v, %v)", s0, s1)
	}
	if len(i0) != 0 {
		t.Errorf("intel %v without a list", i0)
	}
	if !slices.Equal(i1, []string{"c2"}) || c1 != 1 || !strings.Contains(e1, "c2") {
		t.Errorf("listed candidate: intel %v, component %v, explanation %q", i1, c1, e1)
	}
	if s1 <= s0 {
		t.Errorf("the intel match did not raise the score: %.3f with, %.3f without", s1, s0)
	}
}
