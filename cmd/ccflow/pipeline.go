package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/ccflow/ccflow/analysis"
	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/enrich"
	"github.com/ccflow/ccflow/ingest"
	"github.com/ccflow/ccflow/privacy"
	"github.com/ccflow/ccflow/sink"
)

// lifecycle stops what a command started, in reverse order, logging each
// step, so that shutdown always drains upstream stages before downstream
// ones.
type lifecycle struct {
	log   *slog.Logger
	stops []namedStop
}

type namedStop struct {
	name string
	stop func() error
}

// add registers stop to run at shutdown, before every stop added earlier.
func (l *lifecycle) add(name string, stop func() error) {
	l.stops = append(l.stops, namedStop{name, stop})
}

// stopAll runs the stops in reverse order and joins their errors.
func (l *lifecycle) stopAll() error {
	var errs []error
	for i := len(l.stops) - 1; i >= 0; i-- {
		s := l.stops[i]
		if err := s.stop(); err != nil {
			l.log.Error("stop failed", "component", s.name, "err", err)
			errs = append(errs, fmt.Errorf("stop %s: %w", s.name, err))
		}
	}
	l.stops = nil
	return errors.Join(errs...)
}

// keyedError turns a start-up error whose text begins with a configuration
// key ("enrich.asn_db: ...") into a *config.FieldError for that key, so that
// Loader.Attribute can name the file and line that set it.
func keyedError(err error) error {
	if err == nil {
		return nil
	}
	var fe *config.FieldError
	if errors.As(err, &fe) {
		return err
	}
	msg := err.Error()
	key, rest, ok := strings.Cut(msg, ": ")
	if !ok {
		return err
	}
	base := key
	if i := strings.IndexByte(base, '['); i >= 0 {
		base = base[:i] + "[]" + base[strings.IndexByte(base, ']')+1:]
	}
	for _, k := range config.Keys(reflect.TypeOf(Config{})) {
		if k.Key == base || strings.HasPrefix(k.Key, base+".") {
			return &config.FieldError{Key: key, Msg: rest}
		}
	}
	return err
}

// privacyKeyError attributes privacy start-up errors to their keys.
func privacyKeyError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, privacy.ErrNoKeyring), errors.Is(err, privacy.ErrLoosePermissions),
		errors.Is(err, privacy.ErrKeyringMismatch), errors.Is(err, privacy.ErrNoKey), errors.Is(err, privacy.ErrBadKey):
		return &config.FieldError{Key: "privacy.keys_dir", Msg: err.Error()}
	case errors.Is(err, privacy.ErrNoSubscribers):
		return &config.FieldError{Key: "privacy.subscribers", Msg: err.Error()}
	}
	return keyedError(err)
}

// newRedactingLogger returns the logger of a command that sees raw flows,
// with the privacy redactor as its backstop, and the redactor to bind to
// the privacy stage.
func newRedactingLogger(w io.Writer, cfg Config) (*slog.Logger, *privacy.Redactor) {
	red := privacy.NewRedactor()
	return newLogger(w, cfg.Log, red.ReplaceAttr), red
}

// loadAllowlistsLogged loads the detector's allowlists (used at start and
// on SIGHUP).
func loadAllowlistsLogged(cfg Config) (*detect.Allowlist, error) {
	a, err := loadAllowlists(cfg.Detect.Allowlists)
	if err != nil {
		return nil, &config.FieldError{Key: "detect.allowlists", Msg: err.Error()}
	}
	return a, nil
}

// detectorSide builds the sink, the detector and the analysis stage that
// reads from src, and starts the sink and the stage. The returned stage
// owns the detector.
func detectorSide(ctx context.Context, cfg Config, log *slog.Logger, o *ops, lc *lifecycle, src analysis.Source, enr *enrich.Enricher) (*analysis.Stage, error) {
	sk, err := sink.New(cfg.Sink, sink.Deps{Logger: log, Registerer: o.reg})
	if err != nil {
		return nil, keyedError(err)
	}
	if err := sk.Start(ctx); err != nil {
		return nil, keyedError(err)
	}
	lc.add("sink", sk.Stop)
	allow, err := loadAllowlistsLogged(cfg)
	if err != nil {
		return nil, err
	}
	det, err := detect.New(cfg.Detect, detect.Deps{Logger: log, Registerer: o.reg, Allowlist: allow})
	if err != nil {
		return nil, keyedError(err)
	}
	deps := analysis.Deps{Logger: log, Registerer: o.reg, Source: src, Detector: det, Sink: sk}
	if enr != nil {
		deps.Enrich = enr.NewWorker().Enrich
	}
	an, err := analysis.New(cfg.Analysis, deps)
	if err != nil {
		return nil, err
	}
	if err := an.Start(ctx); err != nil {
		return nil, keyedError(err)
	}
	lc.add("analysis", an.Stop)
	return an, nil
}

// startEnricher builds and starts the enricher, or returns nil when no
// enrichment source is configured.
func startEnricher(ctx context.Context, cfg Config, log *slog.Logger, o *ops, lc *lifecycle) (*enrich.Enricher, error) {
	enr, err := enrich.New(cfg.Enrich, enrich.Deps{Logger: log, Registerer: o.reg})
	if err != nil {
		return nil, keyedError(err)
	}
	if err := enr.Start(ctx); err != nil {
		return nil, err
	}
	lc.add("enrich", enr.Stop)
	return enr, nil
}

// onReload calls reload on every SIGHUP until ctx ends.
func onReload(ctx context.Context, log *slog.Logger, reload func() error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading allowlists and enrichment sources")
				if err := reload(); err != nil {
					log.Error("reload failed; keeping the previous data", "err", err)
				}
			}
		}
	}()
}

// reloader returns the SIGHUP action of a command with a detector: reload
// the enrichment sources and swap the detector's allowlist.
func reloader(cfg Config, enr *enrich.Enricher, an *analysis.Stage) func() error {
	return func() error {
		var errs []error
		if enr != nil {
			if err := enr.Reload(); err != nil {
				errs = append(errs, err)
			}
		}
		if an != nil {
			allow, err := loadAllowlistsLogged(cfg)
			if err != nil {
				errs = append(errs, err)
			} else {
				an.Do(func(d *detect.Detector) { d.SetAllowlist(allow) })
			}
		}
		return errors.Join(errs...)
	}
}

// addSinkFlags adds the storage flags of run, detect and replay.
func addSinkFlags(fs *pflag.FlagSet) {
	bindFlag(fs, "parquet-dir", "sink.parquet.dir", "write Parquet tables (flows/, beacon_pairs/, cc_candidates/) under `DIR`")
	bindFlag(fs, "clickhouse-dsn", "sink.clickhouse.dsn", "store in ClickHouse at `DSN` (selects sink.kind clickhouse unless it is set)")
}

// addAnalysisFlags adds the detector-side flags of run and detect.
func addAnalysisFlags(fs *pflag.FlagSet) {
	bindFlag(fs, "state-dir", "analysis.state_dir", "keep the detector checkpoint in `DIR`")
	bindFlag(fs, "candidates", "analysis.candidates_file", "append reported candidates as JSON lines to `FILE`")
	bindFlag(fs, "window", "detect.window", "detection window `DURATION` (event time)")
	bindFlag(fs, "hop", "detect.hop", "evaluation hop `DURATION` (event time)")
	bindFlag(fs, "threshold", "detect.threshold", "candidate score `THRESHOLD` (0..1)")
}

// startPrivacy builds and starts the privacy stage, binding the command's
// log redactor to the subscriber prefixes, and only then starts the
// metrics server: until the redactor is bound it redacts every address, so
// nothing is logged before.
func startPrivacy(ctx context.Context, cfg Config, log *slog.Logger, red *privacy.Redactor, o *ops, lc *lifecycle) (*privacy.Stage, error) {
	priv, err := privacy.New(cfg.Privacy, privacy.Deps{Logger: log, Registerer: o.reg, Redactor: red})
	if err != nil {
		return nil, privacyKeyError(err)
	}
	if err := priv.Start(ctx); err != nil {
		return nil, privacyKeyError(err)
	}
	lc.add("privacy", priv.Stop)
	o.Start()
	return priv, nil
}

// startCollecting starts the collector side after privacy and enrichment:
// the batcher publishing to p, the ingest handler (pseudonymize, enrich,
// batch) and the collector's listeners. Shutdown stops them in reverse, so
// the listeners close before the batcher flushes.
func startCollecting(ctx context.Context, cfg Config, log *slog.Logger, o *ops, lc *lifecycle, priv *privacy.Stage, enr *enrich.Enricher, p bus.Producer) (*ingest.Handler, *collector.Collector, error) {
	bdeps := bus.Deps{Logger: log, Registerer: o.reg}
	batcher, err := bus.NewBatcher(cfg.Bus.Batch, p, bdeps)
	if err != nil {
		return nil, nil, keyedError(err)
	}
	if err := batcher.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, nil, err
	}
	lc.add("batcher", batcher.Stop)
	h := ingest.New(context.WithoutCancel(ctx), ingest.Deps{Privacy: priv, Enricher: enr, Output: batcher, Logger: log, Registerer: o.reg})
	coll, err := collector.New(cfg.Collector, collector.Deps{Logger: log, Registerer: o.reg, Handler: h})
	if err != nil {
		return nil, nil, keyedError(err)
	}
	if err := coll.Start(ctx); err != nil {
		return nil, nil, err
	}
	lc.add("collector", coll.Stop)
	return h, coll, nil
}
