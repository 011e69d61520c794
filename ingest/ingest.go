// Package ingest is the collector side of the pipeline: it receives the
// collector's decoded records (as a collector.Handler), pseudonymizes them
// (privacy), enriches their remote side (enrich) and hands the pseudonymized
// flows to the bus. Raw records never leave this package's call: they are
// pseudonymized in the caller's goroutine, into a per-worker buffer, before
// anything else sees them.
package ingest

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/enrich"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy"
)

// Output receives pseudonymized flows; bus.Batcher implements it. Add must
// be safe for concurrent use and must not retain flows after it returns
// (it copies them). It may block to push back on the collectors.
type Output interface {
	Add(ctx context.Context, flows ...flow.Pseudo) error
}

// Deps are the stages a Handler joins.
type Deps struct {
	// Privacy pseudonymizes records; required.
	Privacy *privacy.Stage
	// Enricher enriches the remote side; nil skips enrichment.
	Enricher *enrich.Enricher
	// Output receives the pseudonymized flows; required.
	Output Output
	// Logger and Registerer are the usual injected dependencies.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Handler implements collector.Handler. HandleFlows may be called
// concurrently for different workers, at most once at a time per worker, as
// the collector guarantees.
type Handler struct {
	ctx  context.Context
	deps Deps
	log  *slog.Logger

	mu      sync.Mutex
	workers []*workerState

	published  atomic.Uint64
	flows      prometheus.Counter
	outErrors  prometheus.Counter
	lastErrLog time.Time
}

var _ collector.Handler = (*Handler)(nil)

type workerState struct {
	buf []flow.Pseudo
	enr *enrich.Worker
}

// New returns a Handler. ctx bounds blocking hand-overs to Output: when it
// is canceled, flows that cannot be handed over are counted as output
// errors.
func New(ctx context.Context, deps Deps) *Handler {
	h := &Handler{ctx: ctx, deps: deps, log: deps.Logger.With("stage", "ingest")}
	h.flows = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ccflow", Subsystem: "ingest", Name: "flows_total",
		Help: "Pseudonymized flows handed to the bus.",
	})
	h.outErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "ccflow", Subsystem: "ingest", Name: "output_errors_total",
		Help: "Pseudonymized flows the bus did not accept (stopping, or the bus is closed).",
	})
	if deps.Registerer != nil {
		deps.Registerer.MustRegister(h.flows, h.outErrors)
	}
	return h
}

func (h *Handler) worker(i int) *workerState {
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.workers) <= i {
		h.workers = append(h.workers, nil)
	}
	w := h.workers[i]
	if w == nil {
		w = &workerState{}
		if h.deps.Enricher != nil {
			w.enr = h.deps.Enricher.NewWorker()
		}
		h.workers[i] = w
	}
	return w
}

// HandleFlows pseudonymizes recs, enriches them and hands them to Output.
func (h *Handler) HandleFlows(worker int, recs []flow.Record) {
	w := h.worker(worker)
	w.buf = h.deps.Privacy.Pseudonymize(recs, w.buf[:0])
	if len(w.buf) == 0 {
		return
	}
	if w.enr != nil {
		w.enr.Enrich(w.buf)
	}
	if err := h.deps.Output.Add(h.ctx, w.buf...); err != nil {
		h.outErrors.Add(float64(len(w.buf)))
		h.mu.Lock()
		if time.Since(h.lastErrLog) > 5*time.Second {
			h.lastErrLog = time.Now()
			h.mu.Unlock()
			h.log.Error("bus did not accept flows", "flows", len(w.buf), "err", err)
		} else {
			h.mu.Unlock()
		}
		return
	}
	h.flows.Add(float64(len(w.buf)))
	h.published.Add(uint64(len(w.buf)))
}

// Published returns the number of pseudonymized flows handed to Output.
func (h *Handler) Published() uint64 { return h.published.Load() }
