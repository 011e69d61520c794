package analysis

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/flow"
)

// recSink records what the stage stores, and the order of syncs.
type recSink struct {
	mu        sync.Mutex
	flows     int
	batches   map[flow.BatchID]int
	cands     []flow.Candidate
	pairs     int
	syncs     int
	events    []string
	failFlows error
}

func newRecSink() *recSink { return &recSink{batches: map[flow.BatchID]int{}} }

func (s *recSink) WriteFlows(_ context.Context, b flow.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failFlows != nil {
		return s.failFlows
	}
	s.flows += len(b.Flows)
	s.batches[b.ID]++
	return nil
}
func (s *recSink) WritePairs(_ context.Context, p []flow.PairScore) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pairs += len(p)
	return nil
}
func (s *recSink) WriteCandidates(_ context.Context, c []flow.Candidate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cands = append(s.cands, c...)
	return nil
}
func (s *recSink) Sync(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	s.events = append(s.events, "sync")
	return nil
}

// recSource wraps the in-process bus and records commits in the sink's
// event list, so the test can check their order.
type recSource struct {
	*bus.Inproc
	sink      *recSink
	stateDir  string
	committed int
	ckptSeen  []bool
}

func (r *recSource) Commit(ctx context.Context, ds ...bus.Delivery) error {
	r.sink.mu.Lock()
	r.sink.events = append(r.sink.events, "commit")
	r.sink.mu.Unlock()
	r.committed += len(ds)
	if r.stateDir != "" {
		_, err := os.Stat(filepath.Join(r.stateDir, "detector.ckpt"))
		r.ckptSeen = append(r.ckptSeen, err == nil)
	}
	return r.Inproc.Commit(ctx, ds...)
}

var remote = flow.AddrFrom(netip.MustParseAddr("203.0.113.5"))

// beaconBatches returns batches of flows from t0 to t0+span: three
// subscribers beacon to 203.0.113.5:8080/tcp every 60 s with small jitter,
// and 50 subscribers browse random endpoints.
func beaconBatches(t0 time.Time, span time.Duration, perBatch int, seq *uint64) []flow.Batch {
	rng := rand.New(rand.NewPCG(1, 2))
	var flows []flow.Pseudo
	for ms := int64(0); ms < span.Milliseconds(); ms += 1000 {
		ts := t0.UnixMilli() + ms
		if ms%60000 == 0 {
			for s := byte(1); s <= 3; s++ {
				j := rng.Int64N(2000)
				flows = append(flows, flow.Pseudo{TimeStartMs: ts + j, TimeEndMs: ts + j + 300, Kind: flow.KindSubscriber, Direction: flow.DirOutbound,
					Sub: flow.Pseudonym{s}, Remote: remote, RemotePort: 8080, Proto: 6, Bytes: 420, Packets: 6, SamplingRate: 1})
			}
		}
		if rng.IntN(3) == 0 {
			var r flow.Addr
			r[10], r[11], r[12], r[13], r[14], r[15] = 0xff, 0xff, 198, 51, 100, byte(rng.IntN(200))
			flows = append(flows, flow.Pseudo{TimeStartMs: ts, TimeEndMs: ts + 2000, Kind: flow.KindSubscriber, Direction: flow.DirOutbound,
				Sub: flow.Pseudonym{byte(10 + rng.IntN(50))}, Remote: r, RemotePort: 443, Proto: 6, Bytes: uint64(1000 + rng.IntN(50000)), Packets: 20, SamplingRate: 1})
		}
	}
	var out []flow.Batch
	for len(flows) > 0 {
		n := min(perBatch, len(flows))
		*seq++
		out = append(out, flow.Batch{ID: bus.NewBatchID([8]byte{1}, *seq), Flows: flows[:n]})
		flows = flows[n:]
	}
	return out
}

func testDetector(t *testing.T) *detect.Detector {
	t.Helper()
	cfg := detect.DefaultConfig()
	cfg.Window = time.Hour
	cfg.Hop = 15 * time.Minute
	cfg.AllowedLateness = time.Minute
	d, err := detect.New(cfg, detect.Deps{Allowlist: detect.NewAllowlist()})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type harness struct {
	stage *Stage
	src   *recSource
	sink  *recSink
	reg   *prometheus.Registry
	cfg   Config
}

func newHarness(t *testing.T, cfg Config, sk *recSink) *harness {
	t.Helper()
	in := bus.NewInproc(bus.InprocConfig{Queue: 1 << 12}, bus.Deps{})
	src := &recSource{Inproc: in, sink: sk, stateDir: cfg.StateDir}
	reg := prometheus.NewRegistry()
	st, err := New(cfg, Deps{Registerer: reg, Source: src, Detector: testDetector(t), Sink: sk})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Stop() })
	return &harness{stage: st, src: src, sink: sk, reg: reg, cfg: cfg}
}

func (h *harness) publish(t *testing.T, bs []flow.Batch) {
	t.Helper()
	for _, b := range bs {
		if err := h.src.Publish(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
}

// drain closes the bus and waits for the stage to finish consuming it.
func (h *harness) drain(t *testing.T) {
	t.Helper()
	_ = h.src.Inproc.Stop()
	select {
	case <-h.stage.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("stage did not drain the bus")
	}
	if err := h.stage.Err(); err != nil {
		t.Fatalf("stage ended with %v", err)
	}
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	dir := t.TempDir()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CandidatesFile = filepath.Join(dir, "candidates.jsonl")
	cfg.CheckpointInterval = time.Hour
	return cfg
}

func countFlows(bs []flow.Batch) int {
	n := 0
	for _, b := range bs {
		n += len(b.Flows)
	}
	return n
}

func readCandidates(t *testing.T, path string) []flow.Candidate {
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
			t.Fatalf("candidates file: %v", err)
		}
		out = append(out, c)
	}
	return out
}

func hasEndpoint(cs []flow.Candidate, addr string, port uint16) *flow.Candidate {
	for i := range cs {
		if cs[i].RemoteAddr.String() == addr && cs[i].RemotePort == port && cs[i].Suppressed == "" {
			return &cs[i]
		}
	}
	return nil
}

func TestConsumeDetectStoreCommit(t *testing.T) {
	cfg := testConfig(t)
	sk := newRecSink()
	h := newHarness(t, cfg, sk)
	var seq uint64
	bs := beaconBatches(time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC), 3*time.Hour, 500, &seq)
	h.publish(t, bs)
	h.drain(t)

	if want := countFlows(bs); sk.flows != want {
		t.Errorf("sink got %d flows, want %d", sk.flows, want)
	}
	if h.src.committed != len(bs) {
		t.Errorf("committed %d deliveries, want %d", h.src.committed, len(bs))
	}
	c := hasEndpoint(readCandidates(t, cfg.CandidatesFile), "203.0.113.5", 8080)
	if c == nil {
		t.Fatalf("203.0.113.5:8080 not in the candidates file")
	}
	if c.Subscribers != 3 || c.PeriodS < 54 || c.PeriodS > 66 {
		t.Errorf("candidate: %d subscribers, period %.1f s; want 3 and about 60 s", c.Subscribers, c.PeriodS)
	}
	if hasEndpoint(sk.cands, "203.0.113.5", 8080) == nil {
		t.Errorf("candidate not written to the sink")
	}
	// Every commit comes after a sync, and after a checkpoint exists.
	synced := false
	for _, e := range sk.events {
		switch e {
		case "sync":
			synced = true
		case "commit":
			if !synced {
				t.Fatalf("commit before any sync: %v", sk.events)
			}
			synced = false
		}
	}
	for i, ok := range h.src.ckptSeen {
		if !ok {
			t.Errorf("commit %d happened without a checkpoint on disk", i)
		}
	}
	if got := testutil.ToFloat64(h.stage.m.flows); int(got) != countFlows(bs) {
		t.Errorf("flows metric %v, want %d", got, countFlows(bs))
	}
}

func TestDuplicateBatchesDropped(t *testing.T) {
	cfg := testConfig(t)
	sk := newRecSink()
	h := newHarness(t, cfg, sk)
	var seq uint64
	bs := beaconBatches(time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC), 30*time.Minute, 200, &seq)
	h.publish(t, bs)
	h.publish(t, bs[:3]) // redelivered
	h.drain(t)
	if want := countFlows(bs); sk.flows != want {
		t.Errorf("sink got %d flows, want %d (duplicates must be dropped)", sk.flows, want)
	}
	for id, n := range sk.batches {
		if n != 1 {
			t.Errorf("batch %s stored %d times", id, n)
		}
	}
	if got := testutil.ToFloat64(h.stage.m.batches.WithLabelValues("duplicate")); got != 3 {
		t.Errorf("duplicate batches counted %v, want 3", got)
	}
	if h.src.committed != len(bs)+3 {
		t.Errorf("committed %d, want %d (duplicates are committed too)", h.src.committed, len(bs)+3)
	}
}

// TestRestartResumesWindows splits a run in two at a checkpoint: the second
// stage restores the first one's detector, so the candidates it reports for
// windows spanning the restart include flows seen before it. A negative
// control runs the second half with a fresh state directory and must not.
func TestRestartResumesWindows(t *testing.T) {
	var seq uint64
	bs := beaconBatches(time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC), 3*time.Hour, 500, &seq)
	half := len(bs) / 2
	split := time.UnixMilli(bs[half].Flows[0].TimeStartMs)

	secondHalf := func(t *testing.T, resume bool) (restored float64, spans bool, stored int) {
		cfg := testConfig(t)
		sk1 := newRecSink()
		h1 := newHarness(t, cfg, sk1)
		h1.publish(t, bs[:half])
		h1.drain(t)
		if !resume {
			cfg.StateDir = filepath.Join(t.TempDir(), "fresh")
		}
		sk2 := newRecSink()
		h2 := newHarness(t, cfg, sk2)
		h2.publish(t, bs[half:])
		h2.drain(t)
		for _, c := range sk2.cands {
			if c.RemotePort == 8080 && c.FirstSeen.Before(split) {
				spans = true
			}
		}
		return testutil.ToFloat64(h2.stage.m.checkpoints.WithLabelValues("restored")), spans, sk1.flows + sk2.flows
	}

	restored, spans, stored := secondHalf(t, true)
	if restored != 1 {
		t.Fatalf("checkpoint not restored (restored=%v)", restored)
	}
	if !spans {
		t.Errorf("no candidate after the restart covers flows from before it: the windows were not resumed")
	}
	if stored != countFlows(bs) {
		t.Errorf("flows stored across both runs %d, want %d", stored, countFlows(bs))
	}
	if _, spans, _ := secondHalf(t, false); spans {
		t.Errorf("negative control: a fresh detector reported evidence from before the restart")
	}
}

func TestDamagedCheckpointMovedAside(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "detector.ckpt"), []byte("not a checkpoint"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, cfg, newRecSink())
	if got := testutil.ToFloat64(h.stage.m.checkpoints.WithLabelValues("restore_error")); got != 1 {
		t.Errorf("restore_error = %v, want 1", got)
	}
	m, _ := filepath.Glob(filepath.Join(cfg.StateDir, "detector.ckpt.bad-*"))
	if len(m) != 1 {
		t.Errorf("damaged checkpoint not kept aside: %v", m)
	}
	h.drain(t)
}

func TestSinkFailureCommitsNothing(t *testing.T) {
	cfg := testConfig(t)
	sk := newRecSink()
	sk.failFlows = errors.New("disk on fire")
	h := newHarness(t, cfg, sk)
	var seq uint64
	h.publish(t, beaconBatches(time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC), 10*time.Minute, 100, &seq))
	select {
	case <-h.stage.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("stage did not stop on a sink failure")
	}
	if h.stage.Err() == nil {
		t.Fatal("stage ended without an error")
	}
	if h.src.committed != 0 {
		t.Errorf("committed %d deliveries after a failed store", h.src.committed)
	}
	if got := testutil.ToFloat64(h.stage.m.sinkErrors.WithLabelValues("flows")); got != 1 {
		t.Errorf("sink errors %v, want 1", got)
	}
}

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestRedeliveryAfterCheckpointDropped stands for a crash between the
// checkpoint and the offset commit: the bus redelivers batches that the
// restored detector state already holds. The checkpoint carries their IDs,
// so the restarted stage drops them instead of counting them twice.
func TestRedeliveryAfterCheckpointDropped(t *testing.T) {
	cfg := testConfig(t)
	var seq uint64
	bs := beaconBatches(time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC), time.Hour, 300, &seq)
	h1 := newHarness(t, cfg, newRecSink())
	h1.publish(t, bs)
	h1.drain(t)

	sk2 := newRecSink()
	h2 := newHarness(t, cfg, sk2)
	redelivered := bs[len(bs)-4:]
	h2.publish(t, redelivered)
	fresh := beaconBatches(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC), 10*time.Minute, 300, &seq)
	h2.publish(t, fresh)
	h2.drain(t)
	if got := testutil.ToFloat64(h2.stage.m.batches.WithLabelValues("duplicate")); got != float64(len(redelivered)) {
		t.Errorf("dropped %v redelivered batches, want %d", got, len(redelivered))
	}
	if sk2.flows != countFlows(fresh) {
		t.Errorf("second run stored %d flows, want only the %d new ones", sk2.flows, countFlows(fresh))
	}
}
