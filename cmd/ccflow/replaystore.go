package main

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/enrich"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink"
	"github.com/ccflow/ccflow/sink/parquet"
)

// formatParquet is replay's input format for the Parquet sink's own flows
// table: flows already pseudonymized, so no key and no privacy stage.
const formatParquet = "parquet"

// replayStore writes what a replay produces to the configured sink (when
// the replay was asked to store, with --parquet-dir, --clickhouse-dsn or
// sink.* set explicitly): every replayed flow in batches with IDs of their
// own, pair scores and candidates.
type replayStore struct {
	w        sink.Writer
	instance [8]byte
	seq      uint64
}

// newReplayStore starts the sink, or returns nil when store is false.
func newReplayStore(ctx context.Context, cfg Config, store bool, log *slog.Logger, reg prometheus.Registerer) (*replayStore, error) {
	if !store {
		return nil, nil
	}
	w, err := sink.New(cfg.Sink, sink.Deps{Logger: log, Registerer: reg})
	if err != nil {
		return nil, keyedError(err)
	}
	if err := w.Start(ctx); err != nil {
		return nil, keyedError(err)
	}
	s := &replayStore{w: w}
	if _, err := crand.Read(s.instance[:]); err != nil {
		return nil, fmt.Errorf("batch id: %w", err)
	}
	return s, nil
}

// flows stores a batch of replayed flows (the sink copies them).
func (s *replayStore) flows(ctx context.Context, fs []flow.Pseudo) error {
	if s == nil || len(fs) == 0 {
		return nil
	}
	s.seq++
	return s.w.WriteFlows(ctx, flow.Batch{ID: bus.NewBatchID(s.instance, s.seq), Flows: fs})
}

// results stores the detector's finished windows.
func (s *replayStore) results(ctx context.Context, res []detect.Result) error {
	if s == nil {
		return nil
	}
	for _, r := range res {
		if len(r.Pairs) > 0 {
			if err := s.w.WritePairs(ctx, r.Pairs); err != nil {
				return err
			}
		}
		if len(r.Candidates) > 0 {
			if err := s.w.WriteCandidates(ctx, r.Candidates); err != nil {
				return err
			}
		}
	}
	return nil
}

// close flushes the sink and stops it.
func (s *replayStore) close() error {
	if s == nil {
		return nil
	}
	return s.w.Stop()
}

// replayOutput is where a replay's results go: candidates (and, with
// --pairs-out, pair scores) as JSON lines, and the sink when storing.
type replayOutput struct {
	w       resultWriter
	out     *bufio.Writer
	pairs   *bufio.Writer
	closers []func()
	store   *replayStore
	opts    replayOptions
}

// openReplayOutput creates the JSON-lines outputs of opts.
func openReplayOutput(opts replayOptions, store *replayStore) (*replayOutput, error) {
	o := &replayOutput{store: store, opts: opts}
	out, closeOut, err := createOutput(opts.out)
	if err != nil {
		return nil, err
	}
	o.out, o.closers = out, append(o.closers, closeOut)
	o.w = resultWriter{cands: json.NewEncoder(out), includeSuppressed: opts.includeSuppressed}
	if opts.pairsOut != "" {
		pw, closePairs, err := createOutput(opts.pairsOut)
		if err != nil {
			o.close()
			return nil, err
		}
		o.pairs, o.closers = pw, append(o.closers, closePairs)
		o.w.pairs = json.NewEncoder(pw)
	}
	return o, nil
}

// results stores and writes the detector's finished windows.
func (o *replayOutput) results(ctx context.Context, res []detect.Result) error {
	if err := o.store.results(ctx, res); err != nil {
		return err
	}
	return o.w.write(res)
}

// finish flushes the JSON-lines outputs.
func (o *replayOutput) finish() error {
	if err := o.out.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", o.opts.out, err)
	}
	if o.pairs != nil {
		if err := o.pairs.Flush(); err != nil {
			return fmt.Errorf("write %s: %w", o.opts.pairsOut, err)
		}
	}
	return nil
}

// close closes the output files.
func (o *replayOutput) close() {
	for _, c := range o.closers {
		c()
	}
}

// runReplayParquet replays the Parquet flows tables in opts.files (a sink
// directory, its flows/ directory, a date= partition or single files)
// through enrichment and the detector. The flows are pseudonymized already:
// no key is needed and the privacy stage does not run.
func runReplayParquet(ctx context.Context, cfg Config, opts replayOptions, store bool, stderr io.Writer) (err error) {
	began := time.Now()
	reg := prometheus.NewRegistry()
	log := newLogger(stderr, cfg.Log, nil)
	enr, err := enrich.New(cfg.Enrich, enrich.Deps{Logger: log, Registerer: reg})
	if err != nil {
		return keyedError(err)
	}
	allow, err := loadAllowlists(cfg.Detect.Allowlists)
	if err != nil {
		return err
	}
	det, err := detect.New(cfg.Detect, detect.Deps{Logger: log, Registerer: reg, Allowlist: allow})
	if err != nil {
		return err
	}
	st, err := newReplayStore(ctx, cfg, store, log, reg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, st.close()) }()
	out, err := openReplayOutput(opts, st)
	if err != nil {
		return err
	}
	defer out.close()
	var rng *rand.Rand
	if opts.sample > 1 {
		rng = rand.New(rand.NewPCG(opts.seed, 0x5a5a))
	}

	var read, replayed int
	kept := make([]flow.Pseudo, 0, replayBatch)
	for _, path := range opts.files {
		err := parquet.ReadFlows(ctx, path, func(b flow.Batch) error {
			read += len(b.Flows)
			kept = kept[:0]
			for _, f := range b.Flows {
				if rng != nil {
					if rng.IntN(opts.sample) != 0 {
						continue
					}
					f.SamplingRate = max(1, f.SamplingRate) * uint32(opts.sample)
				}
				kept = append(kept, f)
			}
			replayed += len(kept)
			enr.Enrich(kept)
			det.Observe(kept)
			if err := st.flows(ctx, kept); err != nil {
				return err
			}
			return out.results(ctx, det.Results())
		})
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if read == 0 {
		return errors.New("no flows to replay: no Parquet flows files under the given paths")
	}
	det.Flush()
	if err := out.results(ctx, det.Results()); err != nil {
		return err
	}
	if err := out.finish(); err != nil {
		return err
	}
	el := time.Since(began)
	log.Info("replay finished", "format", formatParquet, "paths", len(opts.files), "flows_read", read, "flows_replayed", replayed,
		"windows", out.w.windows, "candidates", out.w.candidates, "pair_scores", out.w.pairScores, "seconds", el.Seconds())
	return nil
}
