package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/analysis"
	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/ingest"
)

func newRunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Collector, privacy, enrichment, detector and sinks in one process",
		Long: `run is ccflow on one host: it receives NetFlow v5/v9, IPFIX and sFlow,
pseudonymizes subscriber addresses (privacy.*), enriches the remote side
(enrich.*), passes batches over an in-process bus (or Kafka, with bus.kind: kafka) to
the detector (detect.*)
and stores flows, pair scores and candidates (sink.*: Parquet files under
sink.parquet.dir by default, or ClickHouse). Reported candidates are also
appended to analysis.candidates_file as JSON lines (the input of ccflow eval).

Without --keys or privacy.keys_dir, an epoch key is created on first start in
a default directory and a notice says where. Subscriber prefixes are required
(--subscribers or privacy.subscribers): without them nothing could be told
apart from a remote endpoint.

SIGTERM stops the listeners, drains the bus into the detector, checkpoints the
detector (analysis.state_dir) and flushes the sinks before exit; the next start
resumes the detector's windows. SIGHUP reloads allowlists and enrichment
sources. Metrics: metrics.addr (/metrics, /healthz, /readyz).`,
		Example: `  ccflow run --subscribers 192.0.2.0/24,2001:db8::/32
  ccflow run --config /etc/ccflow/ccflow.yaml --parquet-dir /var/lib/ccflow/data`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, l, done, err := loadConfigOrigins(cmd)
			if err != nil || done {
				return err
			}
			return l.Attribute(runRun(cmd.Context(), cfg, cmd.ErrOrStderr()))
		},
	}
	fs := cmd.Flags()
	bindFlag(fs, "metrics-addr", "metrics.addr", "serve /metrics, /healthz and /readyz on `HOST:PORT` (empty: off)")
	bindFlag(fs, "netflow-addr", "collector.netflow.addr", "listen for NetFlow v5/v9 on UDP `HOST:PORT` (empty: off)")
	bindFlag(fs, "ipfix-addr", "collector.ipfix.addr", "listen for IPFIX on UDP `HOST:PORT` (empty: off)")
	bindFlag(fs, "sflow-addr", "collector.sflow.addr", "listen for sFlow v5 on UDP `HOST:PORT` (empty: off)")
	addSinkFlags(fs)
	addPrivacyFlags(fs)
	addEnrichFlags(fs)
	addAnalysisFlags(fs)
	return cmd
}

// runRun runs the whole pipeline in one process until ctx is canceled or
// the detector side fails.
func runRun(ctx context.Context, cfg Config, stderr io.Writer) (err error) {
	log, red := newRedactingLogger(stderr, cfg)
	lc := &lifecycle{log: log}
	var (
		h  *ingest.Handler
		an *analysis.Stage
	)
	defer func() {
		err = errors.Join(err, lc.stopAll())
		if h != nil && an != nil {
			observed, dupes := an.Counts()
			log.Info("stopped", "flows_published", h.Published(), "flows_observed", observed, "duplicate_batches", dupes, "clean", err == nil)
		}
	}()

	o, err := newOps(cfg.Metrics.Addr, log)
	if err != nil {
		return err
	}
	lc.add("metrics server", func() error { o.Stop(); return nil })

	priv, err := startPrivacy(ctx, cfg, log, red, o, lc)
	if err != nil {
		return err
	}
	enr, err := startEnricher(ctx, cfg, log, o, lc)
	if err != nil {
		return err
	}

	bdeps := bus.Deps{Logger: log, Registerer: o.reg}
	var prod bus.Producer
	if cfg.Bus.Kind == "kafka" {
		// Collector and detector in one process, through Kafka: the
		// detector's consumer starts first, the producer stops first.
		cons, err := bus.NewKafkaConsumer(cfg.Bus.Kafka, bdeps)
		if err != nil {
			return keyedError(err)
		}
		if err := cons.Start(ctx); err != nil {
			return keyedError(err)
		}
		lc.add("kafka consumer", cons.Stop)
		if an, err = detectorSide(ctx, cfg, log, o, lc, cons, nil); err != nil {
			return err
		}
		kp, err := bus.NewKafkaProducer(cfg.Bus.Kafka, bdeps)
		if err != nil {
			return keyedError(err)
		}
		if err := kp.Start(ctx); err != nil {
			return keyedError(err)
		}
		lc.add("kafka producer", kp.Stop)
		prod = kp
	} else {
		inproc := bus.NewInproc(cfg.Bus.Inproc, bdeps)
		if an, err = detectorSide(ctx, cfg, log, o, lc, inproc, nil); err != nil { // the collector side enriches
			return err
		}
		// Shutdown: after the collector and batcher have stopped, close
		// the bus and let the detector drain it before the analysis stage
		// stops.
		lc.add("in-process bus", func() error {
			_ = inproc.Stop()
			select {
			case <-an.Done():
			case <-time.After(time.Minute):
				return errors.New("detector did not drain the in-process bus within a minute")
			}
			return nil
		})
		prod = inproc
	}
	var coll *collector.Collector
	h, coll, err = startCollecting(ctx, cfg, log, o, lc, priv, enr, prod)
	if err != nil {
		return err
	}
	onReload(ctx, log, reloader(cfg, enr, an))

	o.ready.Store(true)
	log.Info("running", "addrs", fmt.Sprint(coll.Addrs()), "sink", cfg.Sink.Kind, "parquet_dir", cfg.Sink.Parquet.Dir,
		"candidates_file", cfg.Analysis.CandidatesFile, "state_dir", cfg.Analysis.StateDir)
	select {
	case <-ctx.Done():
		log.Info("stopping: closing listeners, draining the bus, checkpointing the detector, flushing sinks")
	case <-an.Done():
		err = an.Err()
		log.Error("detector side stopped; shutting down", "err", err)
	}
	o.ready.Store(false)
	return err
}
