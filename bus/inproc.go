package bus

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ccflow/ccflow/flow"
)

// Inproc is the in-process bus of ccflow run: a bounded queue of batches
// between the collector's Batcher (Producer side) and one detector
// (Consumer side). Publish copies the flows, so the publisher may reuse its
// slice. Nothing survives the process; Commit only counts.
type Inproc struct {
	m    *metrics
	q    chan flow.Batch
	done chan struct{}
	once sync.Once
	seq  atomic.Int64
}

var (
	_ Producer = (*Inproc)(nil)
	_ Consumer = (*Inproc)(nil)
)

// NewInproc returns an in-process bus holding up to cfg.Queue batches.
func NewInproc(cfg InprocConfig, deps Deps) *Inproc {
	return &Inproc{m: newMetrics(deps.Registerer), q: make(chan flow.Batch, max(cfg.Queue, 1)), done: make(chan struct{})}
}

// Start does nothing; it exists for the common lifecycle.
func (b *Inproc) Start(context.Context) error { return nil }

// Stop closes the bus: Publish returns ErrClosed, and Fetch returns
// ErrClosed once the queued batches are delivered. It is idempotent.
func (b *Inproc) Stop() error {
	b.once.Do(func() { close(b.done) })
	return nil
}

// Publish queues a copy of batch, blocking while the queue is full.
func (b *Inproc) Publish(ctx context.Context, batch flow.Batch) error {
	select {
	case <-b.done:
		return ErrClosed
	default:
	}
	c := flow.Batch{ID: batch.ID, Flows: append([]flow.Pseudo(nil), batch.Flows...)}
	select {
	case b.q <- c:
		b.m.publishedFlows.Add(float64(len(c.Flows)))
		b.m.queuedBatches.Inc()
		return nil
	case <-b.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fetch returns the next queued batch.
func (b *Inproc) Fetch(ctx context.Context) (Delivery, error) {
	select {
	case batch := <-b.q:
		return b.deliver(batch), nil
	default:
	}
	select {
	case batch := <-b.q:
		return b.deliver(batch), nil
	case <-b.done:
		select {
		case batch := <-b.q:
			return b.deliver(batch), nil
		default:
			return Delivery{}, ErrClosed
		}
	case <-ctx.Done():
		return Delivery{}, ctx.Err()
	}
}

func (b *Inproc) deliver(batch flow.Batch) Delivery {
	b.m.queuedBatches.Dec()
	b.m.consumedMessages.Inc()
	b.m.consumedFlows.Add(float64(len(batch.Flows)))
	return Delivery{Batch: batch, Offset: b.seq.Add(1) - 1}
}

// Commit counts ds as committed; in process there is nothing to redeliver.
func (b *Inproc) Commit(_ context.Context, ds ...Delivery) error {
	b.m.committed.Add(float64(len(ds)))
	return nil
}
