package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ccflow/ccflow/config"
)

// ops is the operations HTTP server: /metrics, /healthz and /readyz.
type ops struct {
	reg     *prometheus.Registry
	ready   atomic.Bool
	srv     *http.Server
	ln      net.Listener
	log     *slog.Logger
	done    chan struct{}
	started atomic.Bool
}

// newOps creates the registry (with Go and process collectors) and, when
// addr is not empty, listens on addr. Listening happens here so that a port
// in use is a start-up error.
func newOps(addr string, log *slog.Logger) (*ops, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "ccflow"}))
	o := &ops{reg: reg, log: log.With("stage", "ops"), done: make(chan struct{})}
	if addr == "" {
		close(o.done)
		return o, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, &config.FieldError{Key: "metrics.addr", Msg: fmt.Sprintf("listen on %s: %v", addr, err)}
	}
	o.ln = ln
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !o.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return o, nil
}

// Addr returns the address the server listens on, or "" when off.
func (o *ops) Addr() string {
	if o.ln == nil {
		return ""
	}
	return o.ln.Addr().String()
}

// Start serves until Stop.
func (o *ops) Start() {
	if o.srv == nil {
		return
	}
	o.started.Store(true)
	o.log.Info("serving metrics", "addr", o.Addr())
	go func() {
		defer close(o.done)
		if err := o.srv.Serve(o.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.Error("metrics server failed", "err", err)
		}
	}()
}

// Stop shuts the server down.
func (o *ops) Stop() {
	if o.srv == nil {
		return
	}
	if !o.started.Load() {
		_ = o.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = o.srv.Shutdown(ctx)
	<-o.done
}
