package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/enrich"
)

func newDetectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "detect",
		Short: "Consume flows from Kafka, detect C&C candidates and store them",
		Long: `detect is the detector half of a split deployment. It joins the Kafka
consumer group bus.kafka.group on bus.kafka.topic (each instance owns whole
partitions, so pair and endpoint state never need merging), drops batches
delivered twice, runs the detector (detect.*) and stores flows, pair scores
and candidates (sink.*). Kafka offsets are committed only after the detector
has been checkpointed (analysis.state_dir) and the sink has made the rows
durable, so a restart resumes without losing its windows (at-least-once).

It never sees subscriber addresses: flows arrive pseudonymized. Enrichment
sources given here (--asn-db, --country-db, --intel) are applied to the
remote side of each flow. SIGTERM checkpoints, commits and flushes before
exit; SIGHUP reloads allowlists and enrichment sources.`,
		Example: `  ccflow detect --config /etc/ccflow/ccflow.yaml
  ccflow detect --kafka-brokers 127.0.0.1:9092 --clickhouse-dsn clickhouse://127.0.0.1:9000/ccflow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, l, done, err := loadConfigOrigins(cmd)
			if err != nil || done {
				return err
			}
			if l.IsSet("bus.kind") && cfg.Bus.Kind != "kafka" {
				return l.Attribute(&config.FieldError{Key: "bus.kind", Msg: "ccflow detect consumes from Kafka: bus.kind must be kafka (use ccflow run for one process without Kafka)"})
			}
			return l.Attribute(runDetect(cmd.Context(), cfg, cmd.ErrOrStderr()))
		},
	}
	fs := cmd.Flags()
	bindFlag(fs, "metrics-addr", "metrics.addr", "serve /metrics, /healthz and /readyz on `HOST:PORT` (empty: off)")
	bindFlag(fs, "kafka-brokers", "bus.kafka.brokers", "Kafka bootstrap brokers `HOST:PORT[,HOST:PORT...]`")
	bindFlag(fs, "topic", "bus.kafka.topic", "Kafka `TOPIC` of flow batches")
	addSinkFlags(fs)
	addEnrichFlags(fs)
	addAnalysisFlags(fs)
	return cmd
}

// runDetect consumes from Kafka until ctx is canceled or the detector side
// fails.
func runDetect(ctx context.Context, cfg Config, stderr io.Writer) (err error) {
	log := newLogger(stderr, cfg.Log, nil) // flows are already pseudonymized here
	lc := &lifecycle{log: log}
	defer func() { err = errors.Join(err, lc.stopAll()) }()

	o, err := newOps(cfg.Metrics.Addr, log)
	if err != nil {
		return err
	}
	o.Start()
	lc.add("metrics server", func() error { o.Stop(); return nil })

	var enr *enrich.Enricher
	if cfg.Enrich.ASNDB != "" || cfg.Enrich.CountryDB != "" || len(cfg.Enrich.Intel) > 0 {
		if enr, err = startEnricher(ctx, cfg, log, o, lc); err != nil {
			return err
		}
	}
	cons, err := bus.NewKafkaConsumer(cfg.Bus.Kafka, bus.Deps{Logger: log, Registerer: o.reg})
	if err != nil {
		return keyedError(err)
	}
	if err := cons.Start(ctx); err != nil {
		return keyedError(err)
	}
	lc.add("kafka consumer", cons.Stop)
	an, err := detectorSide(ctx, cfg, log, o, lc, cons, enr)
	if err != nil {
		return err
	}
	onReload(ctx, log, reloader(cfg, enr, an))

	o.ready.Store(true)
	log.Info("detecting", "kafka", cfg.Bus.Kafka.Brokers, "topic", cfg.Bus.Kafka.Topic, "group", cfg.Bus.Kafka.Group, "sink", cfg.Sink.Kind)
	select {
	case <-ctx.Done():
		log.Info("stopping: checkpointing the detector, committing offsets, flushing sinks")
	case <-an.Done():
		err = an.Err()
		log.Error("detector side stopped; shutting down", "err", err)
	}
	o.ready.Store(false)
	return err
}
