package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/collector/archive"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/enrich"
	"github.com/ccflow/ccflow/flow"
)

// replayOptions are the replay flags that are not configuration keys.
type replayOptions struct {
	format            archive.Format
	mapping           archive.Mapping
	files             []string
	out, pairsOut     string
	sample            int
	seed              uint64
	start             time.Time
	dropLabels        []string
	includeSuppressed bool
	reorder           int
}

func newReplayCmd() *cobra.Command {
	var (
		opts                  replayOptions
		format, mapping, from string
	)
	cmd := &cobra.Command{
		Use:   "replay --format FORMAT --out CANDIDATES.jsonl FILE...",
		Short: "Replay flow archives through privacy, enrichment and the detector",
		Long: `replay reads flow archives, merges their flows in start-time order, and
runs them through the same stages as the live pipeline, in event time and as
fast as the machine allows: the privacy stage (subscriber prefixes, keyed pseudonyms; raw
addresses never leave this process), enrichment (when configured) and the
detector. It writes one candidate per JSON line to --out (and, with
--pairs-out, the pair scores of beaconing pairs).

Formats: binetflow (Argus CSV, as in CTU-13), zeek (conn.log TSV with a
#fields header), cicflowmeter (CICFlowMeter CSV), csv (any delimited file, with
--map naming its columns) and nfcapd (files written by nfdump 1.7). Text
files may be gzip-compressed.

--sample N keeps each flow with probability 1/N (seeded by --seed) and marks it
1:N sampled, to study sampled export. --start moves the earliest flow to the
given time, for captures with relative timestamps (the privacy stage's key
epochs start in 1970-01-05).

Replay streams: archives are read as they are replayed, so their size is
not limited by memory. Flows in archives are only roughly in time order
(Argus and nfcapd write them per time bin, Zeek when a connection ends), so
replay holds up to --reorder flows (about 150 bytes each, split among the
FILEs) and releases the earliest first. The default, 1048576, holds about
160 MB of flows; replaying a 4M-flow file peaks at about 0.6 GB of RSS with
it, 0.17 GB with --reorder 100000, plus the detector's state.
A flow further out of order than that is replayed late (the detector
still counts it unless it is older than the window being filled) and the
count of such flows is logged: raise --reorder if it is large. --start
shifts by the earliest flow among the first --reorder flows.`,
		Example: `  ccflow replay --format binetflow --subscribers 147.32.0.0/16 --keys /tmp/keys \
      --out candidates.jsonl capture20110818-2.binetflow.gz
  ccflow replay --format zeek --subscribers 192.168.1.0/24 --start 2017-03-08T13:47:04Z \
      --sample 10 --out njrat.jsonl labeled-conn.log.gz
  ccflow replay --format csv --map start=ts,src=sa,dst=da,dport=dp,proto=pr,bytes=ibyt \
      --subscribers 10.0.0.0/8 --out c.jsonl flows.csv`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, l, done, err := loadConfigOrigins(cmd)
			if err != nil || done {
				return err
			}
			// Store in the sink only when asked: a replay is a study, and
			// the default sink directory would litter the working directory.
			store := l.IsSet("sink.kind") || l.IsSet("sink.parquet.dir") || l.IsSet("sink.clickhouse.dsn")
			if format == formatParquet {
				if opts.out == "" {
					return errors.New("--out is required")
				}
				if mapping != "" || from != "" || len(opts.dropLabels) > 0 {
					return errors.New("--map, --start and --drop-label do not apply to --format parquet")
				}
				opts.files = args
				return l.Attribute(runReplayParquet(cmd.Context(), cfg, opts, store, cmd.ErrOrStderr()))
			}
			if opts.format, err = archive.ParseFormat(format); err != nil {
				return err
			}
			if mapping != "" {
				if opts.format != archive.FormatCSV {
					return errors.New("--map applies to --format csv only")
				}
				if opts.mapping, err = archive.ParseMapping(mapping); err != nil {
					return fmt.Errorf("--map: %w", err)
				}
			} else if opts.format == archive.FormatCSV {
				return errors.New("--format csv needs --map")
			}
			if opts.sample < 1 {
				return errors.New("--sample must be at least 1")
			}
			if opts.reorder < 1 {
				return errors.New("--reorder must be at least 1")
			}
			if from != "" {
				if opts.start, err = time.Parse(time.RFC3339Nano, from); err != nil {
					return fmt.Errorf("--start: %w", err)
				}
			}
			if opts.out == "" {
				return errors.New("--out is required")
			}
			opts.files = args
			return l.Attribute(runReplay(cmd.Context(), cfg, opts, store, cmd.ErrOrStderr()))
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&format, "format", "", "archive `FORMAT`: binetflow, zeek, cicflowmeter, csv, nfcapd, or parquet (the flows/ table of ccflow's Parquet sink: already pseudonymized, no key needed)")
	fs.StringVar(&mapping, "map", "", "column mapping for --format csv: `KEY=COLUMN,...` with keys start, end, dur, dur_unit, src, dst, sport, dport, proto, bytes, packets, sampling, label, time, sep")
	fs.StringVar(&opts.out, "out", "", "write candidates as JSON lines to `FILE` (- for stdout)")
	fs.StringVar(&opts.pairsOut, "pairs-out", "", "write pair scores of beaconing pairs as JSON lines to `FILE`")
	fs.IntVar(&opts.sample, "sample", 1, "keep each flow with probability 1/`N` and mark it 1:N sampled")
	fs.Uint64Var(&opts.seed, "seed", 1, "`SEED` of --sample")
	fs.StringVar(&from, "start", "", "shift all flows so that the earliest starts at `TIME` (RFC 3339)")
	fs.StringSliceVar(&opts.dropLabels, "drop-label", nil, "drop flows whose ground-truth label contains `TEXT` (repeatable; binetflow, zeek, cicflowmeter)")
	fs.BoolVar(&opts.includeSuppressed, "include-suppressed", false, "also write candidates suppressed by an allowlist (with their reason)")
	fs.IntVar(&opts.reorder, "reorder", defaultReorder, "flows held (in all, split among FILEs) to restore start-time order: `N` x ~150 bytes of memory")
	addPrivacyFlags(fs)
	addEnrichFlags(fs)
	addSinkFlags(fs)
	bindFlag(fs, "window", "detect.window", "detection window `DURATION`")
	bindFlag(fs, "hop", "detect.hop", "evaluation hop `DURATION`")
	bindFlag(fs, "threshold", "detect.threshold", "candidate score `THRESHOLD` (0..1)")
	return cmd
}

// replayBatch is the number of flows pseudonymized and observed at once.
const replayBatch = 4096

// runReplay reads opts.files and replays them; the summary is logged.
func runReplay(ctx context.Context, cfg Config, opts replayOptions, store bool, stderr io.Writer) (err error) {
	began := time.Now()
	reg := prometheus.NewRegistry()
	priv, log, err := newPrivacy(stderr, cfg, reg)
	if err != nil {
		return err
	}
	defer func() { _ = priv.Stop() }()
	enr, err := enrich.New(cfg.Enrich, enrich.Deps{Logger: log, Registerer: reg})
	if err != nil {
		return err
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

	merged, err := openSources(opts)
	if err != nil {
		return err
	}
	defer merged.close()
	out, err := openReplayOutput(opts, st)
	if err != nil {
		return err
	}
	defer out.close()

	recs := make([]flow.Record, 0, replayBatch)
	buf := make([]flow.Pseudo, 0, replayBatch)
	var pseudonymized, replayed int
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		recs, err = merged.next(recs[:0], replayBatch)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		replayed += len(recs)
		buf = priv.Pseudonymize(recs, buf[:0])
		clear(recs) // raw addresses: do not keep them longer than needed
		pseudonymized += len(buf)
		enr.Enrich(buf)
		det.Observe(buf)
		if err := st.flows(ctx, buf); err != nil {
			return err
		}
		if err := out.results(ctx, det.Results()); err != nil {
			return err
		}
	}
	if replayed == 0 {
		return errors.New("no flows to replay")
	}
	for _, s := range merged.srcs {
		if n := s.r.Skipped(); n > 0 {
			log.Warn("rows skipped as unparseable", "file", s.path, "rows", n)
		}
	}
	if merged.late > 0 {
		log.Warn("flows out of order beyond the reorder buffer, replayed late", "flows", merged.late, "reorder", opts.reorder)
	}
	det.Flush()
	if err := out.results(ctx, det.Results()); err != nil {
		return err
	}
	if err := out.finish(); err != nil {
		return err
	}
	el := time.Since(began)
	ds := det.Stats()
	log.Info("replay finished", "files", len(opts.files), "flows_read", merged.read, "flows_replayed", replayed,
		"flows_pseudonymized", pseudonymized, "windows", out.w.windows, "candidates", out.w.candidates,
		"pair_scores", out.w.pairScores, "tracked_pairs", ds.Pairs, "seconds", el.Seconds(),
		"flows_per_second", float64(replayed)/max(el.Seconds(), 1e-9))
	return nil
}

func dropLabel(label string, drop []string) bool {
	for _, d := range drop {
		if d != "" && strings.Contains(label, d) {
			return true
		}
	}
	return false
}

func createOutput(path string) (*bufio.Writer, func(), error) {
	if path == "-" {
		w := bufio.NewWriter(os.Stdout)
		return w, func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("create output: %w", err)
	}
	return bufio.NewWriterSize(f, 1<<16), func() { _ = f.Close() }, nil
}

// resultWriter writes detector results as JSON lines.
type resultWriter struct {
	cands, pairs                    *json.Encoder
	includeSuppressed               bool
	windows, candidates, pairScores int
}

func (w *resultWriter) write(res []detect.Result) error {
	for _, r := range res {
		w.windows++
		for i := range r.Candidates {
			c := &r.Candidates[i]
			if c.Suppressed != "" && !w.includeSuppressed {
				continue
			}
			if err := w.cands.Encode(c); err != nil {
				return fmt.Errorf("write candidate: %w", err)
			}
			w.candidates++
		}
		if w.pairs == nil {
			continue
		}
		for i := range r.Pairs {
			if err := w.pairs.Encode(&r.Pairs[i]); err != nil {
				return fmt.Errorf("write pair score: %w", err)
			}
			w.pairScores++
		}
	}
	return nil
}

// loadAllowlists builds the detector's allowlist from the built-in lists
// and the operator's files.
func loadAllowlists(c detect.AllowlistConfig) (*detect.Allowlist, error) {
	a, err := detect.NewBuiltinAllowlist(c.Builtin)
	if err != nil {
		return nil, err
	}
	for _, path := range c.Files {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("open allowlist: %w", err)
		}
		err = a.Add(path, f)
		_ = f.Close()
		if err != nil {
			return nil, err
		}
	}
	return a, nil
}
