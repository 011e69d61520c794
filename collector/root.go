// Package collector receives NetFlow v5/v9, IPFIX and sFlow v5 datagrams on
// UDP, decodes them and hands normalized flow.Records to an in-memory
// Handler.
//
// Each configured listener binds one or more sockets to its address with
// SO_REUSEPORT; every socket has one worker goroutine that reads datagrams in
// batches (recvmmsg), decodes them and calls the Handler once per batch.
// Any listener accepts any of the four formats (told apart by their version
// field); the listener only sets the protocol label of datagrams that are
// none of them.
//
// Decoding is split as the project's style asks: the wire decoders
// (collector/netflow5, collector/netflow for v9 and IPFIX, collector/sflow)
// parse into protocol-faithful structs in caller-owned buffers and import
// nothing but the standard library; this package maps those structs to
// flow.Record, keeps per-exporter state (NetFlow v9/IPFIX template sessions,
// metrics) and runs the sockets. Steady-state decoding allocates nothing per
// record.
//
// Records hold raw subscriber addresses: they go only to the Handler, never
// to logs, metric labels or errors (privacy invariant P1).
package collector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/flow"
)

// Handler receives decoded records. HandleFlows is called concurrently from
// the worker goroutines, at most one call per worker at a time; worker is
// the worker's index, from 0 to the total socket count minus one. It must
// not retain recs after returning, and it should return quickly: while it
// runs, its worker reads no datagrams.
type Handler interface {
	HandleFlows(worker int, recs []flow.Record)
}

// Deps are the collector's dependencies.
type Deps struct {
	// Logger receives the collector's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the collector's metrics; nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
	// Handler receives the decoded records (required).
	Handler Handler
}

// Sentinel errors.
var (
	// ErrNoHandler is returned by New when Deps.Handler is nil.
	ErrNoHandler = errors.New("collector: a Handler is required")
	// ErrStarted is returned by Start on a collector that was started.
	ErrStarted = errors.New("collector: already started")
	// ErrStopped is returned by Start on a collector that was stopped.
	ErrStopped = errors.New("collector: stopped")
)

// Collector is the collector stage. Create it with New.
type Collector struct {
	cfg   Config
	log   *slog.Logger
	h     Handler
	m     *metrics
	allow []netip.Prefix
	exp   *exporterTable
	errs  *rateLimiter

	mu      sync.Mutex
	started bool
	socks   []*socket
	addrs   map[string]netip.AddrPort
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// New checks the configuration and builds a collector. It does no I/O.
func New(cfg Config, deps Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("collector configuration: %w", err)
	}
	if deps.Handler == nil {
		return nil, ErrNoHandler
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register collector metrics: %w", err)
	}
	c := &Collector{
		cfg:  cfg,
		log:  log.With("stage", "collector"),
		h:    deps.Handler,
		m:    m,
		errs: newRateLimiter(cfg.ErrorLogRate),
		stop: make(chan struct{}),
	}
	for _, s := range cfg.Exporters {
		p, _ := parsePrefix(s) // validated above
		c.allow = append(c.allow, p)
	}
	c.exp = newExporterTable(cfg.MaxExporters, cfg.limits(), m)
	return c, nil
}

// listeners returns the configured listeners with their config key and the
// protocol label used for datagrams in no known format.
func (c *Collector) listeners() []listenerSpec {
	return []listenerSpec{
		{key: "netflow", cfg: c.cfg.NetFlow, fallback: flow.ProtocolNetFlow9},
		{key: "ipfix", cfg: c.cfg.IPFIX, fallback: flow.ProtocolIPFIX},
		{key: "sflow", cfg: c.cfg.SFlow, fallback: flow.ProtocolSFlow5},
	}
}

// Start binds the sockets of every enabled listener and starts one worker
// per socket. A listener that cannot bind (for example, port in use) fails
// Start with an error naming its configuration key, and nothing is left
// running. Workers stop when ctx is canceled or Stop is called.
func (c *Collector) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return ErrStarted
	}
	select {
	case <-c.stop:
		return ErrStopped
	default:
	}
	c.started = true
	addrs := map[string]netip.AddrPort{}
	var socks []*socket
	for _, l := range c.listeners() {
		if l.cfg.Addr == "" {
			continue
		}
		ss, err := openListener(ctx, l, len(socks))
		if err != nil {
			for _, s := range socks {
				s.close()
			}
			return &config.FieldError{Key: "collector." + l.key + ".addr", Msg: err.Error()}
		}
		for _, s := range ss {
			c.m.receiveBuffer.WithLabelValues(l.key).Set(float64(s.rcvbuf))
			if s.rcvbuf < l.cfg.ReceiveBuffer {
				c.log.Warn("receive buffer smaller than configured", "listener", l.key, "bytes", s.rcvbuf, "configured", l.cfg.ReceiveBuffer)
			}
		}
		addrs[l.key] = ss[0].addr
		socks = append(socks, ss...)
		c.log.Info("listening", "listener", l.key, "addr", ss[0].addr.String(), "sockets", len(ss))
	}
	c.socks, c.addrs = socks, addrs
	for _, s := range socks {
		w := newWorker(c, s)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			w.run()
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		select {
		case <-ctx.Done():
		case <-c.stop:
		}
		for _, s := range socks {
			s.close()
		}
	}()
	return nil
}

// Addrs returns the bound address of each enabled listener, keyed by its
// configuration name ("netflow", "ipfix", "sflow"); useful when a listener
// was configured with port 0. It is empty before Start.
func (c *Collector) Addrs() map[string]netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]netip.AddrPort, len(c.addrs))
	for k, v := range c.addrs {
		out[k] = v
	}
	return out
}

// Stop closes the sockets and waits for the workers to finish their
// current batch. It is idempotent and safe to call before Start.
func (c *Collector) Stop() error {
	c.mu.Lock()
	c.stopped.Do(func() { close(c.stop) })
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}
