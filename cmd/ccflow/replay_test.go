package main

import (
	"bufio"
	"encoding/json"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ccflow/ccflow/detect/detecttest"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

// The replay tests run the acceptance cases of issue 4 through the real
// pipeline: archive reader, privacy stage (AES pseudonyms, keys in a
// temporary directory), enrichment, detector, JSON lines, and ccflow eval.

func readJSONL(t *testing.T, path string) []flow.Candidate {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []flow.Candidate
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c flow.Candidate
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, c)
	}
	return out
}

// replayEval replays files and evaluates the result against the shared
// truth file for dataset; it returns the eval report.
func replayEval(t *testing.T, dataset string, args ...string) (evalReport, string) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "candidates.jsonl")
	full := append([]string{"replay", "--keys", filepath.Join(dir, "keys"), "--out", out}, args...)
	if _, stderr, err := ccflow(t, full...); err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	stdout, stderr, err := ccflow(t, "eval", "--truth", testenv.Data(t, "truth.csv"), "--dataset", dataset, "--candidates", out, "--json")
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, stderr)
	}
	var rep evalReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("eval --json: %v\n%s", err, stdout)
	}
	text, _, _ := ccflow(t, "eval", "--truth", testenv.Data(t, "truth.csv"), "--dataset", dataset, "--candidates", out)
	t.Logf("eval:\n%s", text)
	return rep, out
}

func TestReplayNjRAT(t *testing.T) {
	rep, out := replayEval(t, "njrat-zeek", "--format", "zeek", "--subscribers", "192.168.1.0/24",
		"--start", "2017-03-08T13:47:04Z", testenv.Data(t, detecttest.NjRATPath...))
	if rep.Recall != 1 || len(rep.TrueRanks) != 1 || rep.TrueRanks[0].Rank != 1 {
		t.Fatalf("NjRAT C&C not the top candidate: %+v", rep)
	}
	if p := rep.TrueRanks[0].PeriodS; math.Abs(p-11.5) > 1.15 {
		t.Errorf("period %.2f s, want 11.5 s ± 10%%", p)
	}
	for _, c := range readJSONL(t, out) {
		if c.ModelVersion == "" || c.Explanation == "" || c.WindowEnd.Before(c.WindowStart) {
			t.Errorf("incomplete candidate %+v", c)
		}
	}
}

// writeInjected writes records as a binetflow file in a temporary
// directory (the shared data is never copied into the repository).
func writeInjected(t *testing.T, name string, recs []flow.Record) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := detecttest.WriteBinetflow(f, recs, "flow=Injected"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReplayAresInjectedIntoCTU13(t *testing.T) {
	bg := detecttest.CTU13(t, false)
	ares := writeInjected(t, "ares.binetflow", detecttest.AresInCTU13(t, bg, true))
	rep, out := replayEval(t, "cicids2017-ares", "--format", "binetflow", "--subscribers", "147.32.0.0/16",
		"--drop-label", "Botnet", testenv.Data(t, detecttest.CTU13Path...), ares)
	if rep.Recall != 1 || rep.TrueRanks[0].Rank != 1 {
		t.Fatalf("Ares C&C not the top candidate: %+v", rep.TrueRanks)
	}
	if s := rep.TrueRanks[0].Subscribers; s != 5 {
		t.Errorf("subscribers %d, want 5", s)
	}
	if p := rep.TrueRanks[0].PeriodS; math.Abs(p-10) > 0.5 {
		t.Errorf("period %.2f s, want about 10 s", p)
	}
	if c := readJSONL(t, out); len(c) == 0 || c[0].BeaconingSubscribers < 4 {
		t.Errorf("beaconing subscribers: %+v", c)
	}
}

func TestReplayCTU13Clean(t *testing.T) {
	rep, _ := replayEval(t, "ctu13-s11-rbot", "--format", "binetflow", "--subscribers", "147.32.0.0/16",
		"--drop-label", "Botnet", testenv.Data(t, detecttest.CTU13Path...))
	if n := len(rep.FalseCandidates); n > 3 {
		t.Errorf("%d candidates on clean background, want at most 3", n)
	}
	for _, c := range rep.FalseCandidates {
		if !strings.Contains(c.Explanation, "is called") {
			t.Errorf("unexplained candidate %+v", c)
		}
	}
}

// TestReplaySampled replays NjRAT and Ares injected into CTU-13 at 1:10
// (seed 1) through the real pipeline: both are still found.
func TestReplaySampled(t *testing.T) {
	bg := detecttest.CTU13(t, false)
	ares := writeInjected(t, "ares.binetflow", detecttest.AresInCTU13(t, bg, false))
	nj := writeInjected(t, "njrat.binetflow", detecttest.NjRATInCTU13(t, bg, false))
	dir := t.TempDir()
	out := filepath.Join(dir, "c.jsonl")
	if _, stderr, err := ccflow(t, "replay", "--keys", filepath.Join(dir, "keys"), "--out", out, "--format", "binetflow",
		"--subscribers", "147.32.0.0/16", "--drop-label", "Botnet", "--sample", "10", "--seed", "1",
		testenv.Data(t, detecttest.CTU13Path...), ares, nj); err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	for _, ds := range []string{"cicids2017-ares", "njrat-zeek"} {
		stdout, _, err := ccflow(t, "eval", "--truth", testenv.Data(t, "truth.csv"), "--dataset", ds, "--candidates", out, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rep evalReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatal(err)
		}
		t.Logf("1:10 %s: rank %d score %.3f", ds, rep.TrueRanks[0].Rank, rep.TrueRanks[0].Score)
		if rep.Recall != 1 {
			t.Errorf("%s not found at 1:10: %+v", ds, rep.TrueRanks)
		}
	}
	for _, c := range readJSONL(t, out) {
		if c.SamplingRate != 10 || !strings.Contains(c.Explanation, "1:10 sampling") {
			t.Errorf("candidate does not state the sampling it assumed: %d %q", c.SamplingRate, c.Explanation)
		}
	}
}

// TestReplayNfcapd writes an nfcapd file from a Slips capture with
// Debian's softflowd and nfcapd and replays it: the synthetic beacon to
// 141.193.213.21:443 (a curl loop with sleep 2) is found with period 2 s ±
// 10%, the loop's sleep (see checkSlipsPeriod).
func TestReplayNfcapd(t *testing.T) {
	softflowd := testenv.Tool(t, "softflowd")
	nfcapd := testenv.Tool(t, "nfcapd")
	pcap := testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap")
	dir := t.TempDir()
	port := freeUDP(t)
	srv := exec.Command(nfcapd, "-p", port, "-b", "127.0.0.1", "-w", dir, "-I", "test")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if out, err := exec.Command(softflowd, "-r", pcap, "-n", "127.0.0.1:"+port, "-v", "9").CombinedOutput(); err != nil {
		t.Fatalf("softflowd: %v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	_ = srv.Process.Signal(os.Interrupt)
	_ = srv.Wait()
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.*"))
	if len(files) != 1 {
		t.Fatalf("nfcapd wrote %v", files)
	}
	// softflowd -r derives flow times from the pcap through sysUptime, and
	// they can land in the future, where the privacy stage has no keys:
	// --start moves them to a fixed past date.
	rep, out := replayEval(t, "slips-test-cc-1", append([]string{"--format", "nfcapd", "--subscribers", "147.32.80.37/32",
		"--start", "2020-01-06T10:00:00Z"}, files...)...)
	if rep.Recall != 1 || rep.TrueRanks[0].Rank != 1 {
		t.Fatalf("Slips beacon not found: %+v", rep)
	}
	var explanation string
	for _, c := range readJSONL(t, out) {
		if c.RemoteAddr.String() == "141.193.213.21" && c.RemotePort == 443 {
			explanation = c.Explanation
		}
	}
	t.Logf("%s", explanation)
	checkSlipsPeriod(t, rep.TrueRanks[0].PeriodS, explanation)
}

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := netListenUDP()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, port, _ := strings.Cut(c.LocalAddr().String(), ":")
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	return port
}

func TestReplayFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"replay", "--format", "pcap", "--out", filepath.Join(dir, "x"), "f"},
		{"replay", "--format", "csv", "--out", filepath.Join(dir, "x"), "f"},
		{"replay", "--format", "zeek", "--map", "start=a,src=b,dst=c", "--out", filepath.Join(dir, "x"), "f"},
		{"replay", "--format", "zeek", "f"},
		{"replay", "--format", "zeek", "--sample", "0", "--out", filepath.Join(dir, "x"), "f"},
		{"replay", "--format", "zeek", "--start", "yesterday", "--out", filepath.Join(dir, "x"), "f"},
		{"eval", "--truth", filepath.Join(dir, "missing.csv"), "--candidates", filepath.Join(dir, "c")},
	} {
		if _, _, err := ccflow(t, args...); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
}

func netListenUDP() (interface {
	Close() error
	LocalAddr() net.Addr
}, error) {
	return net.ListenPacket("udp", "127.0.0.1:0")
}

// TestReplayReorder replays CTU-13 (with its botnet flows) and the Ares
// injection with the default reorder buffer and with one far too small.
// The Argus file is only roughly in time order: its background flows are
// in order within a few thousand rows, but some long botnet flows are
// written up to 16 minutes (106,595 rows) after flows that started later.
// The default buffer replays every flow in order; the small one replays
// thousands late and says so, and the detector, which tolerates disorder
// within its window, reports the same candidates.
func TestReplayReorder(t *testing.T) {
	bg := detecttest.CTU13(t, false)
	ares := writeInjected(t, "ares.binetflow", detecttest.AresInCTU13(t, bg, true))
	run := func(reorder string) ([]flow.Candidate, string) {
		dir := t.TempDir()
		out := filepath.Join(dir, "c.jsonl")
		_, stderr, err := ccflow(t, "replay", "--keys", filepath.Join(dir, "keys"), "--out", out, "--format", "binetflow",
			"--subscribers", "147.32.0.0/16", "--reorder", reorder,
			testenv.Data(t, detecttest.CTU13Path...), ares)
		if err != nil {
			t.Fatalf("replay --reorder %s: %v\n%s", reorder, err, stderr)
		}
		return readJSONL(t, out), stderr
	}
	want, stderr := run("1048576")
	if strings.Contains(stderr, "out of order") {
		t.Errorf("default buffer replays flows late:\n%s", stderr)
	}
	got, stderr := run("100")
	if !strings.Contains(stderr, "out of order beyond the reorder buffer") {
		t.Errorf("a 100-flow buffer does not report late flows:\n%s", stderr)
	}
	key := func(cs []flow.Candidate) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.RemoteAddr.String()+":"+strconv.Itoa(int(c.RemotePort))+" "+strconv.FormatFloat(c.Score, 'f', 3, 64))
		}
		return out
	}
	if g, w := key(got), key(want); strings.Join(g, ",") != strings.Join(w, ",") {
		t.Errorf("candidates with a 100-flow buffer %v, want %v", g, w)
	}
	if len(want) == 0 || want[0].RemoteAddr.String() != "205.174.165.73" {
		t.Errorf("Ares is not the top candidate: %v", key(want))
	}
}
