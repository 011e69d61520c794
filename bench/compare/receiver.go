package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/ingest"
	"github.com/ccflow/ccflow/privacy"
)

// discard is the bus.Producer of the collector-only receiver: it encodes
// every batch as the Kafka producer does by default (Arrow IPC in a zstd
// frame) and drops the bytes, so that the receiver does the collector
// side's work per flow without a broker.
type discard struct {
	enc   *flowarrow.Encoder
	buf   []byte
	flows prometheus.Counter
	bytes prometheus.Counter
	mu    chan struct{} // one batch at a time (the encoder is not shared)
}

var _ bus.Producer = (*discard)(nil)

func (d *discard) Publish(ctx context.Context, b flow.Batch) error {
	select {
	case d.mu <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-d.mu }()
	out, err := d.enc.Encode(d.buf[:0], b.ID, b.Flows)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	d.buf = out
	d.flows.Add(float64(len(b.Flows)))
	d.bytes.Add(float64(len(out)))
	return nil
}

// runReceiver is the -receiver mode: collector (default configuration,
// NetFlow on listen only, receive buffer rcvbuf unless negative) → privacy (subscriber prefixes, keys in keysDir)
// → batcher → discard, with the collector's metrics on metricsAddr, until
// SIGTERM or SIGINT.
func runReceiver(listen, metricsAddr, keysDir string, rcvbuf int, subscribers []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()

	pcfg := privacy.DefaultConfig()
	pcfg.Subscribers, pcfg.KeysDir = subscribers, keysDir
	priv, err := privacy.New(pcfg, privacy.Deps{Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := priv.Start(ctx); err != nil {
		return err
	}
	defer priv.Stop()

	comp, err := flowarrow.ParseCompression(bus.DefaultConfig().Kafka.Compression)
	if err != nil {
		return err
	}
	d := &discard{
		enc: flowarrow.NewEncoder(comp), mu: make(chan struct{}, 1),
		flows: promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: "compare_discarded_flows_total", Help: "Flows encoded and discarded."}),
		bytes: promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: "compare_discarded_bytes_total", Help: "Encoded bytes discarded."}),
	}
	bdeps := bus.Deps{Logger: log, Registerer: reg}
	batcher, err := bus.NewBatcher(bus.DefaultConfig().Batch, d, bdeps)
	if err != nil {
		return err
	}
	if err := batcher.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer batcher.Stop()

	h := ingest.New(context.WithoutCancel(ctx), ingest.Deps{Privacy: priv, Output: batcher, Logger: log, Registerer: reg})
	ccfg := collector.DefaultConfig()
	ccfg.NetFlow.Addr, ccfg.IPFIX.Addr, ccfg.SFlow.Addr = listen, "", ""
	if rcvbuf >= 0 {
		ccfg.NetFlow.ReceiveBuffer = rcvbuf
	}
	coll, err := collector.New(ccfg, collector.Deps{Logger: log, Registerer: reg, Handler: h})
	if err != nil {
		return err
	}
	if err := coll.Start(ctx); err != nil {
		return err
	}
	defer coll.Stop()

	ln, err := net.Listen("tcp", metricsAddr)
	if err != nil {
		return err
	}
	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ready.Store(true)
	<-ctx.Done()
	return nil
}
