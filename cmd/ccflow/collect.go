package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy"
)

func newCollectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "collect",
		Short: "Receive and decode NetFlow v5/v9, IPFIX and sFlow v5",
		Long: `collect listens for NetFlow v5/v9 (collector.netflow.addr), IPFIX
(collector.ipfix.addr) and sFlow v5 (collector.sflow.addr), decodes every
datagram and serves Prometheus metrics on metrics.addr (/metrics, /healthz,
/readyz, ready once the sockets are bound). It stops on SIGINT or SIGTERM.

Decoded flows stay in memory: until the privacy stage is wired in they are
only counted, and nothing prints or writes their addresses.`,
		Example: `  ccflow collect --config /etc/ccflow/ccflow.yaml
  ccflow collect --netflow-addr 127.0.0.1:2055 --ipfix-addr "" --sflow-addr "" --metrics-addr 127.0.0.1:9465`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			// The privacy stage's redactor is the log backstop (P1); not
			// yet bound to subscriber prefixes, it redacts every address.
			log := newLogger(cmd.ErrOrStderr(), cfg.Log, privacy.NewRedactor().ReplaceAttr)
			return runCollect(cmd.Context(), cfg, log, &countingHandler{})
		},
	}
	fs := cmd.Flags()
	bindFlag(fs, "metrics-addr", "metrics.addr", "serve /metrics, /healthz and /readyz on `HOST:PORT` (empty: off)")
	bindFlag(fs, "netflow-addr", "collector.netflow.addr", "listen for NetFlow v5/v9 on UDP `HOST:PORT` (empty: off)")
	bindFlag(fs, "ipfix-addr", "collector.ipfix.addr", "listen for IPFIX on UDP `HOST:PORT` (empty: off)")
	bindFlag(fs, "sflow-addr", "collector.sflow.addr", "listen for sFlow v5 on UDP `HOST:PORT` (empty: off)")
	return cmd
}

// runCollect runs the collector, handing decoded flows to h, with the
// operations server, until ctx is canceled. /readyz turns ready once every
// listener is bound.
func runCollect(ctx context.Context, cfg Config, log *slog.Logger, h collector.Handler) error {
	o, err := newOps(cfg.Metrics.Addr, log)
	if err != nil {
		return err
	}
	o.Start()
	defer o.Stop()
	c, err := collector.New(cfg.Collector, collector.Deps{Logger: log, Registerer: o.reg, Handler: h})
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	o.ready.Store(true)
	<-ctx.Done()
	o.ready.Store(false)
	log.Info("stopping collector")
	if err := c.Stop(); err != nil {
		return fmt.Errorf("stop collector: %w", err)
	}
	if ch, ok := h.(*countingHandler); ok {
		log.Info("collector stopped", "flows", ch.flows.Load(), "packets", ch.packets.Load(), "bytes", ch.bytes.Load())
	}
	return nil
}

// countingHandler is the in-memory consumer of `ccflow collect` until the
// privacy stage is wired in: it counts flows, packets and bytes and keeps
// nothing else.
type countingHandler struct {
	flows, packets, bytes atomic.Uint64
}

var _ collector.Handler = (*countingHandler)(nil)

// HandleFlows counts recs.
func (h *countingHandler) HandleFlows(_ int, recs []flow.Record) {
	var p, b uint64
	for i := range recs {
		p += recs[i].Packets
		b += recs[i].Bytes
	}
	h.flows.Add(uint64(len(recs)))
	h.packets.Add(p)
	h.bytes.Add(b)
}
