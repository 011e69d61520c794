package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/parquet"
)

// buildBinary builds the ccflow binary (with optional build tags) into a
// temporary directory, for tests that need a real process and real
// signals.
func buildBinary(t *testing.T, tags ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ccflow")
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runSummary is the "stopped" line `ccflow run` logs at exit.
type runSummary struct {
	Msg            string `json:"msg"`
	Published      uint64 `json:"flows_published"`
	Observed       uint64 `json:"flows_observed"`
	DuplicateBatch uint64 `json:"duplicate_batches"`
	Clean          bool   `json:"clean"`
}

func findSummary(t *testing.T, log []byte) runSummary {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s runSummary
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Msg == "stopped" {
			return s
		}
	}
	t.Fatalf("no final summary in the log:\n%s", log)
	return runSummary{}
}

// TestSIGTERMUnderLoad sends SIGTERM to `ccflow run` while the simulator
// streams NetFlow v9 at it, restarts it on the same directories while the
// load continues, and stops it again. Nothing may be lost inside a run
// (every flow the collector side published was observed and stored) and
// nothing doubled: the Parquet flows table holds exactly the flows both
// runs published, with no batch stored twice, and the second run resumed
// the detector's state.
func TestSIGTERMUnderLoad(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	nf := freePort(t, "udp")
	args := func(metrics string) []string {
		return []string{"run", "--subscribers", "100.64.0.0/10,2001:db8::/32", "--keys", filepath.Join(dir, "keys"),
			"--parquet-dir", filepath.Join(dir, "data"), "--state-dir", filepath.Join(dir, "state"),
			"--candidates", filepath.Join(dir, "candidates.jsonl"), "--netflow-addr", nf, "--ipfix-addr", "", "--sflow-addr", "",
			"--metrics-addr", metrics, "--log-format", "json", "--window", "1h", "--hop", "15m"}
	}
	start := func(metrics string) (*exec.Cmd, *syncBuffer) {
		var out syncBuffer
		cmd := exec.Command(bin, args(metrics)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		waitReady(t, metrics, &out)
		return cmd, &out
	}
	stop := func(cmd *exec.Cmd, out *syncBuffer) runSummary {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("ccflow run exited with %v after SIGTERM:\n%s", err, out.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("ccflow run did not exit within 60 s of SIGTERM:\n%s", out.String())
		}
		return findSummary(t, []byte(out.String()))
	}

	runA, outA := start(freePort(t, "tcp"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sim := exec.CommandContext(ctx, bin, "simulate", "--netflow-addr", nf, "--flow-rate", "20000", "--wall-duration", "14s",
		"--subscribers", "500", "--seed", "7", "--start=-6h", "--progress", "0")
	var simOut syncBuffer
	sim.Stdout, sim.Stderr = &simOut, &simOut
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	a := stop(runA, outA) // under load
	runB, outB := start(freePort(t, "tcp"))
	time.Sleep(4 * time.Second)
	if err := sim.Wait(); err != nil {
		t.Fatalf("simulate: %v\n%s", err, simOut.String())
	}
	time.Sleep(time.Second)
	b := stop(runB, outB)

	if a.Published == 0 || b.Published == 0 {
		t.Fatalf("both runs must have taken load: published %d and %d", a.Published, b.Published)
	}
	for name, s := range map[string]runSummary{"first": a, "second": b} {
		if !s.Clean || s.Observed != s.Published {
			t.Errorf("%s run: published %d flows, the detector observed %d (clean=%v): lost inside the process", name, s.Published, s.Observed, s.Clean)
		}
	}
	if !strings.Contains(outB.String(), "detector state restored") {
		t.Errorf("second run did not restore the detector checkpoint:\n%s", outB.String())
	}

	type row struct {
		id flow.BatchID
		f  flow.Pseudo
	}
	seen := map[row]int{}
	total := 0
	err := parquet.ReadFlows(context.Background(), filepath.Join(dir, "data"), func(bt flow.Batch) error {
		for _, f := range bt.Flows {
			seen[row{bt.ID, f}]++
			total++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := int(a.Published + b.Published); total != want {
		t.Errorf("Parquet flows table holds %d rows, the two runs published %d", total, want)
	}
	for r, n := range seen {
		if n > 1 {
			t.Errorf("batch %s stored a flow %d times", r.id, n)
			break
		}
	}
	t.Logf("first run %d flows, second run %d flows, %d rows stored", a.Published, b.Published, total)
	_ = os.Remove(bin)
}
