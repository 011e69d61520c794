package analysis

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/flow"
)

// Source is where batches come from: bus.KafkaConsumer or bus.Inproc.
// Fetch blocks until a batch arrives, ctx ends (ctx.Err()) or the source is
// closed and drained (bus.ErrClosed). Commit marks deliveries done; it is
// called from the same goroutine as Fetch.
type Source interface {
	Fetch(ctx context.Context) (bus.Delivery, error)
	Commit(ctx context.Context, ds ...bus.Delivery) error
}

// Sink stores what the stage produces; sink.Writer implements it. Writes
// copy their input. Sync returns once every row written before it is
// durable.
type Sink interface {
	WriteFlows(ctx context.Context, b flow.Batch) error
	WritePairs(ctx context.Context, pairs []flow.PairScore) error
	WriteCandidates(ctx context.Context, cands []flow.Candidate) error
	Sync(ctx context.Context) error
}

// Deps are the stage's dependencies.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Source delivers batches; required.
	Source Source
	// Detector is owned by the stage from Start on: no other goroutine
	// may call it. Required.
	Detector *detect.Detector
	// Sink stores flows, pair scores and candidates; required.
	Sink Sink
	// Enrich, when not nil, enriches each batch's flows before they are
	// observed and stored (for detectors whose collectors do not enrich).
	Enrich func([]flow.Pseudo)
	// Now is the wall clock (tests replace it); nil means time.Now.
	Now func() time.Time
}

// Stage runs the consume → detect → store → checkpoint → commit loop in
// one goroutine, which owns the detector.
type Stage struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	m    *metrics

	dedup     *bus.Dedup
	pending   []bus.Delivery
	candOut   *os.File
	candBuf   *bufio.Writer
	candJSON  *json.Encoder
	lastCkpt  time.Time
	lastFlow  time.Time
	newestMs  int64
	ops       chan func(*detect.Detector)
	stopFetch context.CancelFunc
	hardStop  context.CancelFunc
	procCtx   context.Context
	done      chan struct{}
	err       error
	stopOnce  sync.Once
	stopGrace time.Duration
	observed  atomic.Uint64
	dupes     atomic.Uint64
}

// Counts returns the flows fed to the detector and the batches dropped as
// duplicates so far.
func (s *Stage) Counts() (flows, duplicateBatches uint64) { return s.observed.Load(), s.dupes.Load() }

// New checks the configuration and dependencies; it does no I/O.
func New(cfg Config, deps Deps) (*Stage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Source == nil || deps.Detector == nil || deps.Sink == nil {
		return nil, errors.New("analysis: source, detector and sink are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Stage{
		cfg: cfg, deps: deps, log: deps.Logger.With("stage", "analysis"), m: newMetrics(deps.Registerer),
		dedup: bus.NewDedup(cfg.DedupBatches), ops: make(chan func(*detect.Detector), 4),
		done: make(chan struct{}), stopGrace: 30 * time.Second,
	}, nil
}

func (s *Stage) checkpointPath() string { return filepath.Join(s.cfg.StateDir, "detector.ckpt") }

// Start restores the detector from its checkpoint (a damaged checkpoint is
// moved aside, logged and counted, and the detector starts empty), opens
// the candidates file and starts the loop.
func (s *Stage) Start(ctx context.Context) error {
	if s.cfg.StateDir != "" {
		if err := os.MkdirAll(s.cfg.StateDir, 0o700); err != nil {
			return fmt.Errorf("analysis.state_dir: %w", err)
		}
		if err := s.restore(); err != nil {
			return err
		}
	}
	if s.cfg.CandidatesFile != "" {
		if dir := filepath.Dir(s.cfg.CandidatesFile); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("analysis.candidates_file: %w", err)
			}
		}
		f, err := os.OpenFile(s.cfg.CandidatesFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("analysis.candidates_file: %w", err)
		}
		s.candOut, s.candBuf = f, bufio.NewWriter(f)
		s.candJSON = json.NewEncoder(s.candBuf)
	}
	fetchCtx, stopFetch := context.WithCancel(context.WithoutCancel(ctx))
	procCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopFetch, s.hardStop, s.procCtx = stopFetch, hardStop, procCtx
	s.lastCkpt = s.deps.Now()
	s.lastFlow = s.lastCkpt
	go s.loop(fetchCtx)
	return nil
}

func (s *Stage) restore() error {
	path := s.checkpointPath()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open checkpoint: %w", err)
	}
	ids, err := s.readCheckpoint(bufio.NewReaderSize(f, 1<<20))
	_ = f.Close()
	if err == nil {
		for _, id := range ids {
			s.dedup.Seen(id)
		}
		s.m.checkpoints.WithLabelValues("restored").Inc()
		st := s.deps.Detector.Stats()
		s.log.Info("detector state restored", "file", path, "pairs", st.Pairs, "batches", len(ids))
		return nil
	}
	s.m.checkpoints.WithLabelValues("restore_error").Inc()
	aside := fmt.Sprintf("%s.bad-%d", path, s.deps.Now().Unix())
	if rerr := os.Rename(path, aside); rerr != nil {
		return fmt.Errorf("checkpoint %s cannot be restored (%v) nor moved aside: %w", path, err, rerr)
	}
	s.log.Error("checkpoint cannot be restored; moved aside, starting with an empty detector", "file", path, "moved_to", aside, "err", err)
	return nil
}

// Checkpoint file: the magic, the number of batch IDs the state includes,
// the IDs (oldest first), then the detector's own checkpoint. The IDs let a
// restarted stage drop batches the bus redelivers although the restored
// state already holds them (a crash between checkpoint and commit).
var checkpointMagic = [8]byte{'C', 'C', 'F', 'A', 'N', 'A', '0', '1'}

func (s *Stage) readCheckpoint(r *bufio.Reader) ([]flow.BatchID, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read checkpoint header: %w", err)
	}
	if [8]byte(hdr[:8]) != checkpointMagic {
		return nil, errors.New("not an analysis checkpoint (bad magic)")
	}
	n := binary.LittleEndian.Uint32(hdr[8:])
	if int64(n) > int64(s.cfg.DedupBatches)*4+1<<20 {
		return nil, fmt.Errorf("checkpoint claims %d batch IDs", n)
	}
	ids := make([]flow.BatchID, n)
	for i := range ids {
		if _, err := io.ReadFull(r, ids[i][:]); err != nil {
			return nil, fmt.Errorf("read checkpoint batch IDs: %w", err)
		}
	}
	if err := s.deps.Detector.Restore(r); err != nil {
		return nil, err
	}
	return ids, nil
}

// Done is closed when the loop has ended: the source was closed and
// drained, Stop was called, or a sink write failed (see Err).
func (s *Stage) Done() <-chan struct{} { return s.done }

// Err returns why the loop ended, once Done is closed; nil for a clean end.
func (s *Stage) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Do runs fn on the loop's goroutine, which owns the detector (for example
// to swap its allowlist on SIGHUP). It returns without waiting.
func (s *Stage) Do(fn func(*detect.Detector)) {
	select {
	case s.ops <- fn:
	case <-s.done:
	}
}

// Stop stops fetching, then checkpoints the detector, syncs the sink and
// commits what was consumed, waiting at most 30 s for a slow sink. It is
// idempotent and returns the loop's error.
func (s *Stage) Stop() error {
	s.stopOnce.Do(func() {
		if s.stopFetch == nil {
			close(s.done)
			return
		}
		s.stopFetch()
		t := time.AfterFunc(s.stopGrace, s.hardStop)
		<-s.done
		t.Stop()
		s.hardStop()
	})
	return s.err
}

// fetchWait bounds one Fetch so that checkpoints and idle advance happen
// while no batch arrives.
const fetchWait = time.Second

func (s *Stage) loop(fetchCtx context.Context) {
	defer close(s.done)
	defer s.closeCandidates()
	for {
		select {
		case fn := <-s.ops:
			fn(s.deps.Detector)
		default:
		}
		ctx, cancel := context.WithTimeout(fetchCtx, fetchWait)
		d, err := s.deps.Source.Fetch(ctx)
		cancel()
		switch {
		case err == nil:
			if err := s.process(d); err != nil {
				s.err = err
				return // nothing past the last checkpoint is committed
			}
		case errors.Is(err, bus.ErrClosed) || fetchCtx.Err() != nil:
			s.err = s.checkpoint("stop")
			return
		case errors.Is(err, context.DeadlineExceeded):
			s.idle()
		default:
			s.err = fmt.Errorf("fetch: %w", err)
			s.log.Error("fetch failed; stopping", "err", err)
			return
		}
		if s.deps.Now().Sub(s.lastCkpt) >= s.cfg.CheckpointInterval {
			if err := s.checkpoint("interval"); err != nil {
				s.log.Error("checkpoint failed; will retry", "err", err)
				s.lastCkpt = s.deps.Now() // retry at the next interval
			}
		}
	}
}

// process observes one delivery and stores what it produced.
func (s *Stage) process(d bus.Delivery) error {
	s.pending = append(s.pending, d)
	s.m.pending.Set(float64(len(s.pending)))
	if s.dedup.Seen(d.Batch.ID) {
		s.m.batches.WithLabelValues("duplicate").Inc()
		s.dupes.Add(1)
		return nil
	}
	s.m.batches.WithLabelValues("observed").Inc()
	flows := d.Batch.Flows
	s.lastFlow = s.deps.Now()
	for i := range flows {
		s.newestMs = max(s.newestMs, flows[i].TimeStartMs)
	}
	if s.deps.Enrich != nil {
		s.deps.Enrich(flows)
	}
	s.deps.Detector.Observe(flows)
	s.m.flows.Add(float64(len(flows)))
	s.observed.Add(uint64(len(flows)))
	if s.cfg.StoreFlows && len(flows) > 0 {
		if err := s.deps.Sink.WriteFlows(s.procCtx, d.Batch); err != nil {
			s.m.sinkErrors.WithLabelValues("flows").Inc()
			return fmt.Errorf("store flows: %w", err)
		}
	}
	return s.results()
}

// results stores the detector's finished windows.
func (s *Stage) results() error {
	for _, r := range s.deps.Detector.Results() {
		if len(r.Pairs) > 0 {
			if err := s.deps.Sink.WritePairs(s.procCtx, r.Pairs); err != nil {
				s.m.sinkErrors.WithLabelValues("beacon_pairs").Inc()
				return fmt.Errorf("store pair scores: %w", err)
			}
		}
		if len(r.Candidates) == 0 {
			continue
		}
		if err := s.deps.Sink.WriteCandidates(s.procCtx, r.Candidates); err != nil {
			s.m.sinkErrors.WithLabelValues("cc_candidates").Inc()
			return fmt.Errorf("store candidates: %w", err)
		}
		reported := 0
		for i := range r.Candidates {
			c := &r.Candidates[i]
			if c.Suppressed != "" {
				s.m.candidates.WithLabelValues("suppressed").Inc()
				continue
			}
			reported++
			s.m.candidates.WithLabelValues("reported").Inc()
			if s.candJSON != nil {
				if err := s.candJSON.Encode(c); err != nil {
					return fmt.Errorf("write candidates file: %w", err)
				}
			}
		}
		if reported > 0 {
			s.log.Info("window evaluated", "window_end", r.WindowEnd.UTC().Format(time.RFC3339), "candidates", reported)
		}
	}
	if s.candBuf != nil {
		if err := s.candBuf.Flush(); err != nil {
			return fmt.Errorf("write candidates file: %w", err)
		}
	}
	return nil
}

// idle moves the watermark on with the wall clock when no flow arrived for
// IdleAdvance.
func (s *Stage) idle() {
	if s.cfg.IdleAdvance <= 0 || s.newestMs == 0 {
		return
	}
	quiet := s.deps.Now().Sub(s.lastFlow)
	if quiet < s.cfg.IdleAdvance {
		return
	}
	s.deps.Detector.Advance(time.UnixMilli(s.newestMs).Add(quiet))
	if err := s.results(); err != nil {
		s.log.Error("storing results after idle advance failed", "err", err)
	}
}

// checkpoint makes everything consumed so far durable, in the order that
// keeps at-least-once without double counting: first the sink and the
// candidates file are synced (the rows exist), then the detector state is
// written with the IDs of the batches it includes, then the bus offsets are
// committed. A crash before the checkpoint redelivers batches the old state
// lacks (stored rows may repeat; they carry batch_id); a crash before the
// commit redelivers batches the new state holds, which its IDs drop.
func (s *Stage) checkpoint(why string) error {
	began := s.deps.Now()
	if err := s.deps.Sink.Sync(s.procCtx); err != nil {
		s.m.checkpoints.WithLabelValues("error").Inc()
		return fmt.Errorf("sync sink: %w", err)
	}
	if s.candOut != nil {
		if err := s.candBuf.Flush(); err != nil {
			return fmt.Errorf("write candidates file: %w", err)
		}
		if err := s.candOut.Sync(); err != nil {
			return fmt.Errorf("sync candidates file: %w", err)
		}
	}
	if s.cfg.StateDir != "" {
		n, err := s.writeCheckpoint()
		if err != nil {
			s.m.checkpoints.WithLabelValues("error").Inc()
			return err
		}
		s.m.checkpointSize.Set(float64(n))
	}
	if len(s.pending) > 0 {
		if err := s.deps.Source.Commit(s.procCtx, s.pending...); err != nil {
			s.m.checkpoints.WithLabelValues("error").Inc()
			return fmt.Errorf("commit offsets: %w", err)
		}
		s.pending = s.pending[:0]
		s.m.pending.Set(0)
	}
	now := s.deps.Now()
	s.lastCkpt = now
	s.m.checkpoints.WithLabelValues("ok").Inc()
	s.m.lastCheckpoint.Set(float64(now.Unix()))
	s.m.checkpointSecs.Observe(now.Sub(began).Seconds())
	if why == "stop" {
		s.log.Info("final checkpoint written", "state_dir", s.cfg.StateDir)
	}
	return nil
}

// writeCheckpoint writes the detector state atomically: a temporary file,
// fsync, rename, fsync of the directory.
func (s *Stage) writeCheckpoint() (int64, error) {
	path := s.checkpointPath()
	tmp, err := os.CreateTemp(s.cfg.StateDir, "detector.ckpt.tmp-*")
	if err != nil {
		return 0, fmt.Errorf("create checkpoint: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	w := bufio.NewWriterSize(tmp, 1<<20)
	ids := s.dedup.IDs()
	var hdr [12]byte
	copy(hdr[:8], checkpointMagic[:])
	binary.LittleEndian.PutUint32(hdr[8:], uint32(len(ids)))
	_, err = w.Write(hdr[:])
	for i := 0; err == nil && i < len(ids); i++ {
		_, err = w.Write(ids[i][:])
	}
	var n int64
	if err == nil {
		n, err = s.deps.Detector.Checkpoint(w)
		n += int64(len(hdr) + 16*len(ids))
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("write checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("install checkpoint: %w", err)
	}
	if d, err := os.Open(s.cfg.StateDir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return n, nil
}

func (s *Stage) closeCandidates() {
	if s.candOut == nil {
		return
	}
	_ = s.candBuf.Flush()
	_ = s.candOut.Close()
}
