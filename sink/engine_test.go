package sink_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/sink/clickhouse"
	"github.com/ccflow/ccflow/sink/parquet"
	"github.com/ccflow/ccflow/sink/sinktest"
	"github.com/ccflow/ccflow/sink/table"
	"github.com/ccflow/ccflow/testenv"
)

// python returns a python3 that has chdb and pyarrow (.ci/run installs
// them with pip), or handles them as missing (skip on a laptop, fail in CI).
func python(t *testing.T) string {
	t.Helper()
	py := testenv.Tool(t, "python3")
	if out, err := exec.Command(py, "-c", "import chdb, pyarrow").CombinedOutput(); err != nil {
		testenv.Missing(t, "python modules chdb and pyarrow (pip install chdb pyarrow; .ci/run pins them): %v: %s", err, out)
	}
	return py
}

// docQueries extracts the ```sql blocks of docs/queries.md.
func docQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.Root(t), "docs", "queries.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}

type engineReport struct {
	EngineVersion string                `json:"engine_version"`
	Columns       map[string][][]string `json:"columns"`
	Counts        map[string]int        `json:"counts"`
	Dedup         struct {
		Before          []int   `json:"before"`
		After           [][]int `json:"after"`
		BlockRollupRows int     `json:"block_rollup_rows"`
	} `json:"dedup"`
	RollupViews []string             `json:"rollup_views"`
	Queries     []map[string][][]any `json:"queries"`
	PyArrow     map[string]struct {
		Files int
		Rows  []map[string]any
	} `json:"pyarrow"`
}

// TestEngine runs the schema of deploy/clickhouse and every query of
// docs/queries.md on a real ClickHouse engine (chDB 26.x), on MergeTree
// tables and on the Parquet sink's files, and reads those files back with
// pyarrow, an independent Parquet reader.
func TestEngine(t *testing.T) {
	py := python(t)
	root := testenv.Root(t)
	dir := t.TempDir()
	pdir := filepath.Join(dir, "data")

	// Data of today (UTC), so that "today" and "last day" queries see it.
	t0 := time.Now().UTC().Truncate(24 * time.Hour)
	batches := sinktest.Flows(0, 6000, 250, t0)
	pairs := sinktest.Pairs(60, t0)
	cands := sinktest.Candidates(40, t0)
	cfg := parquet.DefaultConfig()
	cfg.Dir = pdir
	cfg.RowGroupRows = 1000
	w, err := parquet.New(cfg, parquet.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if err := w.WriteFlows(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WritePairs(ctx, pairs); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteCandidates(ctx, cands); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}

	// External lists for the correlation queries (read from the cwd).
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	seen := t0.Add(2 * time.Hour).Format("2006-01-02 15:04:05")
	writeFile(t, filepath.Join(work, "external.csv"), "address,source,first_seen\n"+
		sinktest.Endpoint.String()+",honeypot-eu,"+seen+"\n2001:db8:beef::1,darknet,"+seen+"\n192.0.2.200,other,"+seen+"\n")
	writeFile(t, filepath.Join(work, "external_prefixes.csv"), "prefix,source\n198.51.100.0/24,sinkhole\n2001:db8:beef::/48,darknet\n")

	migs, err := clickhouse.Migrations(clickhouse.DefaultConfig().Params())
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for _, m := range migs {
		stmts = append(stmts, m.Statements...)
	}
	queries := docQueries(t)
	if len(queries) < 7 {
		t.Fatalf("found %d sql blocks in docs/queries.md, want at least 7", len(queries))
	}
	job := map[string]any{
		"statements": stmts, "tables": []string{table.Flows, table.Pairs, table.Candidates, "remote_hourly"},
		"parquet_dir": pdir, "queries": queries, "workdir": work,
	}
	jobFile, reportFile := filepath.Join(dir, "job.json"), filepath.Join(dir, "report.json")
	b, _ := json.Marshal(job)
	writeFile(t, jobFile, string(b))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, py, filepath.Join(root, "scripts", "chdb_check.py"), jobFile, reportFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/chdb_check.py: %v\n%s", err, out)
	}
	var rep engineReport
	rb, err := os.ReadFile(reportFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(rb, &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("ClickHouse engine %s (chDB)", rep.EngineVersion)
	if major := strings.SplitN(rep.EngineVersion, ".", 2)[0]; len(major) < 2 || major < "23" {
		t.Errorf("engine version %s, want ClickHouse >= 23", rep.EngineVersion)
	}

	// The tables the migrations create have exactly the sinks' columns.
	for tbl, cols := range table.Columns {
		var want [][]string
		for _, c := range cols {
			want = append(want, []string{c.Name, c.Type})
		}
		if diff := cmp.Diff(rep.Columns[tbl], want); diff != "" {
			t.Errorf("table %s: columns created by the migrations (-got) differ from the sinks' (+want):\n%s", tbl, diff)
		}
	}
	var arrowNames, flowNames []string
	for _, f := range flowarrow.Schema().Fields() {
		arrowNames = append(arrowNames, f.Name)
	}
	for _, c := range table.FlowColumns {
		flowNames = append(flowNames, c.Name)
	}
	if diff := cmp.Diff(arrowNames, flowNames); diff != "" {
		t.Errorf("flowarrow schema (-got) and flows table (+want) differ:\n%s", diff)
	}

	// The engine read every row of the Parquet files.
	nflows := 0
	for _, b := range batches {
		nflows += len(b.Flows)
	}
	if diff := cmp.Diff(rep.Counts, map[string]int{table.Flows: nflows, table.Pairs: len(pairs), table.Candidates: len(cands)}); diff != "" {
		t.Errorf("rows loaded from Parquet (-got +want):\n%s", diff)
	}

	// A block inserted twice under one token is stored once, rollup too.
	once := []int{rep.Dedup.Before[0] + 100, rep.Dedup.Before[1] + rep.Dedup.BlockRollupRows}
	if diff := cmp.Diff(rep.Dedup.After, [][]int{once, once}); diff != "" {
		t.Errorf("flows and rollup rows after inserting one block twice with one deduplication token (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(rep.RollupViews, []string{"remote_hourly"}); diff != "" {
		t.Errorf("rollups (-got +want):\n%s", diff)
	}

	// Every documented query runs, finds rows, and gives the same rows on
	// the MergeTree tables and on the Parquet files.
	for i, res := range rep.Queries {
		name := firstLine(queries[i])
		if len(res["ch"]) == 0 {
			t.Errorf("query %d (%s) returned no rows on the test data", i+1, name)
		}
		if diff := cmp.Diff(res["pq"], res["ch"]); diff != "" {
			t.Errorf("query %d (%s): Parquet views (-) and MergeTree tables (+) differ:\n%s", i+1, name, diff)
		}
	}

	// pyarrow reads the files back with identical rows and values.
	var wantFlows []map[string]any
	for _, b := range batches {
		for i := range b.Flows {
			wantFlows = append(wantFlows, flowJSON(&b.Flows[i], b.ID))
		}
	}
	var wantPairs, wantCands []map[string]any
	for i := range pairs {
		wantPairs = append(wantPairs, valuesJSON(table.PairColumns, table.PairValues(&pairs[i])))
	}
	for i := range cands {
		wantCands = append(wantCands, valuesJSON(table.CandidateColumns, table.CandidateValues(&cands[i])))
	}
	for tbl, want := range map[string][]map[string]any{table.Flows: wantFlows, table.Pairs: wantPairs, table.Candidates: wantCands} {
		got := rep.PyArrow[tbl]
		if got.Files == 0 {
			t.Errorf("pyarrow found no %s files", tbl)
		}
		if diff := cmp.Diff(canonical(t, got.Rows), canonical(t, want)); diff != "" {
			t.Errorf("%s rows read by pyarrow (-got +want):\n%s", tbl, diff)
		}
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func h(b []byte) string { return hex.EncodeToString(b) }

// flowJSON is a flow as scripts/chdb_check.py dumps pyarrow's rows.
func flowJSON(f *flow.Pseudo, id flow.BatchID) map[string]any {
	return map[string]any{
		"time_start": f.TimeStartMs, "time_end": f.TimeEndMs, "export_proto": f.Protocol.String(),
		"exporter": h(f.Exporter[:]), "obs_domain": f.ObsDomain, "in_if": f.InIf, "out_if": f.OutIf,
		"kind": f.Kind.String(), "direction": f.Direction.String(), "epoch": f.Epoch,
		"sub": h(f.Sub[:]), "sub_port": f.SubPort, "peer": h(f.Peer[:]), "peer_port": f.PeerPort,
		"remote_addr": h(f.Remote[:]), "remote_port": f.RemotePort, "transit_src": h(f.TransitSrc[:]),
		"transit_src_port": f.TransitSrcPort, "proto": f.Proto, "tcp_flags": f.TCPFlags, "bytes": f.Bytes,
		"packets": f.Packets, "sampling_rate": f.SamplingRate, "remote_asn": f.RemoteASN,
		"remote_as_org": f.RemoteASOrg, "remote_country": f.RemoteCountry, "remote_provider": f.Provider,
		"intel": f.Intel, "exporter_name": f.ExporterName, "in_if_name": f.InIfName, "out_if_name": f.OutIfName,
		"batch_id": h(id[:]),
	}
}

// valuesJSON turns table values into the form of the pyarrow dump.
func valuesJSON(cols []table.Column, vals []any) map[string]any {
	m := map[string]any{}
	for i, c := range cols {
		switch v := vals[i].(type) {
		case time.Time:
			m[c.Name] = v.UnixMilli()
		case netip.Addr:
			a := v.As16()
			m[c.Name] = h(a[:])
		case []byte:
			m[c.Name] = h(v)
		default:
			m[c.Name] = v
		}
	}
	return m
}

// canonical renders rows as sorted JSON lines, so that numbers compare by
// value and row order does not matter.
func canonical(t *testing.T, rows []map[string]any) []string {
	t.Helper()
	out := make([]string, len(rows))
	for i, r := range rows {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back map[string]any // numbers become float64 on both sides
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		b, _ = json.Marshal(back)
		out[i] = string(b)
	}
	sort.Strings(out)
	return out
}
