package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

// TestDemo runs the README's first command, `make demo` (scripts/demo.sh),
// end to end but shorter: it builds ccflow, starts `ccflow run`, drives it
// with `ccflow simulate`, stops it with SIGTERM and evaluates. It asserts
// the script's contract (exit 0, last line the eval summary) and, from the
// files the demo leaves, that the simulator's C&C servers are the top
// candidates and that no benign service (NTP, update, DNS) is a candidate.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for about a minute")
	}
	bash := testenv.Tool(t, "bash")
	testenv.Tool(t, "python3")
	goCmd := testenv.Tool(t, "go")
	root := testenv.Root(t)
	dir := filepath.Join(t.TempDir(), "demo")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, filepath.Join(root, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(),
		"DEMO_SECONDS=40", "DEMO_SPEED=180", // 2 h of event time
		"DEMO_DIR="+dir,
		"DEMO_BIN="+filepath.Join(t.TempDir(), "ccflow"),
		"GO="+goCmd,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := strings.TrimRight(out.String(), "\n")
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, text)
	}
	t.Logf("demo output:\n%s", text)

	last := text[strings.LastIndexByte(text, '\n')+1:]
	if want := "recall=1.00 false_candidates=0"; last != want {
		t.Errorf("last line = %q, want %q", last, want)
	}

	truth, err := readTruth(filepath.Join(dir, "truth.csv"), "")
	if err != nil {
		t.Fatal(err)
	}
	cands, err := readCandidates(filepath.Join(dir, "candidates.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(truth) == 0 || len(cands) < len(truth) {
		t.Fatalf("%d candidates for %d C&C servers", len(cands), len(truth))
	}
	isCC := map[endpointKey]bool{}
	for _, r := range truth {
		isCC[r.key] = true
	}
	for i, c := range cands[:len(truth)] {
		if k := candKey(c); !isCC[k] {
			t.Errorf("candidate %d is %s (score %.3f), not a C&C server of the truth", i+1, k, c.Score)
		}
	}
	benign := readBenign(t, filepath.Join(dir, "benign.csv"))
	if len(benign) == 0 {
		t.Fatal("the simulator wrote no benign services")
	}
	for _, c := range cands {
		if kind, ok := benign[candKey(c)]; ok {
			t.Errorf("benign %s service %s is a candidate (score %.3f): %s", kind, candKey(c), c.Score, c.Explanation)
		}
	}

	// beacon_pairs holds the pairs behind every reported candidate (the
	// analyst's drill-down), so it exists whenever a candidate does.
	for _, table := range []string{"flows", "cc_candidates", "beacon_pairs"} {
		files, _ := filepath.Glob(filepath.Join(dir, "parquet", table, "date=*", "*.parquet"))
		if len(files) == 0 {
			t.Errorf("no Parquet files in %s", filepath.Join(dir, "parquet", table))
		}
	}
}

func candKey(c flow.Candidate) endpointKey {
	return endpointKey{c.RemoteAddr.Unmap(), c.RemotePort, c.Proto}
}

// readBenign reads the simulator's --benign CSV (dataset,kind,dst,dport,
// proto,note) into endpoint -> kind.
func readBenign(t *testing.T, path string) map[endpointKey]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[endpointKey]string{}
	for i, r := range rows {
		if i == 0 {
			continue
		}
		if len(r) < 5 {
			t.Fatalf("%s line %d: %d columns", path, i+1, len(r))
		}
		addr, err := netip.ParseAddr(r[2])
		if err != nil {
			t.Fatalf("%s line %d: %v", path, i+1, err)
		}
		port, err := strconv.ParseUint(r[3], 10, 16)
		if err != nil {
			t.Fatalf("%s line %d: %v", path, i+1, err)
		}
		proto, err := flow.ParseIPProto(r[4])
		if err != nil {
			t.Fatalf("%s line %d: %v", path, i+1, err)
		}
		out[endpointKey{addr.Unmap(), uint16(port), proto}] = r[1]
	}
	return out
}
