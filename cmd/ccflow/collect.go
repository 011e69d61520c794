package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/config"
)

func newCollectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "collect",
		Short: "Receive NetFlow/IPFIX/sFlow, pseudonymize and publish flows to Kafka",
		Long: `collect is the collector half of a split deployment. It listens for NetFlow
v5/v9 (collector.netflow.addr), IPFIX (collector.ipfix.addr) and sFlow v5
(collector.sflow.addr), decodes every datagram, replaces subscriber addresses
with keyed pseudonyms (privacy.*), enriches the remote side (enrich.*) and
publishes Arrow batches to Kafka (bus.kafka.*), keyed by remote endpoint so
that each ccflow detect instance owns whole endpoints. When Kafka is
unreachable, batches go to a bounded on-disk spool that drains on recovery.

Raw subscriber addresses never leave this process. Metrics are served on
metrics.addr (/metrics, /healthz, /readyz). SIGTERM stops the listeners,
flushes the batcher and drains or spools what is in flight; SIGHUP reloads
the enrichment sources. For one process without Kafka, use ccflow run.`,
		Example: `  ccflow collect --config /etc/ccflow/ccflow.yaml
  ccflow collect --subscribers 192.0.2.0/24,2001:db8::/32 --keys /var/lib/ccflow/keys \
      --kafka-brokers 127.0.0.1:9092 --netflow-addr :2055`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, l, done, err := loadConfigOrigins(cmd)
			if err != nil || done {
				return err
			}
			if l.IsSet("bus.kind") && cfg.Bus.Kind != "kafka" {
				return l.Attribute(&config.FieldError{Key: "bus.kind", Msg: "ccflow collect publishes to Kafka: bus.kind must be kafka (use ccflow run for one process without Kafka)"})
			}
			return l.Attribute(runCollect(cmd.Context(), cfg, cmd.ErrOrStderr()))
		},
	}
	fs := cmd.Flags()
	bindFlag(fs, "metrics-addr", "metrics.addr", "serve /metrics, /healthz and /readyz on `HOST:PORT` (empty: off)")
	bindFlag(fs, "netflow-addr", "collector.netflow.addr", "listen for NetFlow v5/v9 on UDP `HOST:PORT` (empty: off)")
	bindFlag(fs, "ipfix-addr", "collector.ipfix.addr", "listen for IPFIX on UDP `HOST:PORT` (empty: off)")
	bindFlag(fs, "sflow-addr", "collector.sflow.addr", "listen for sFlow v5 on UDP `HOST:PORT` (empty: off)")
	bindFlag(fs, "kafka-brokers", "bus.kafka.brokers", "Kafka bootstrap brokers `HOST:PORT[,HOST:PORT...]`")
	bindFlag(fs, "topic", "bus.kafka.topic", "Kafka `TOPIC` for flow batches")
	addPrivacyFlags(fs)
	addEnrichFlags(fs)
	return cmd
}

// runCollect runs collector → privacy → enrichment → batcher → Kafka until
// ctx is canceled.
func runCollect(ctx context.Context, cfg Config, stderr io.Writer) (err error) {
	log, red := newRedactingLogger(stderr, cfg)
	lc := &lifecycle{log: log}
	defer func() { err = errors.Join(err, lc.stopAll()) }()

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
	prod, err := bus.NewKafkaProducer(cfg.Bus.Kafka, bus.Deps{Logger: log, Registerer: o.reg})
	if err != nil {
		return keyedError(err)
	}
	if err := prod.Start(ctx); err != nil {
		return keyedError(err)
	}
	lc.add("kafka producer", prod.Stop)
	_, coll, err := startCollecting(ctx, cfg, log, o, lc, priv, enr, prod)
	if err != nil {
		return err
	}
	onReload(ctx, log, reloader(cfg, enr, nil))

	o.ready.Store(true)
	log.Info("collecting", "addrs", fmt.Sprint(coll.Addrs()), "kafka", fmt.Sprint(cfg.Bus.Kafka.Brokers), "topic", cfg.Bus.Kafka.Topic)
	<-ctx.Done()
	o.ready.Store(false)
	log.Info("stopping: closing listeners, flushing batches")
	return nil
}
