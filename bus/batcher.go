package bus

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ccflow/ccflow/flow"
)

// Batcher groups flows from collector workers into batches and publishes
// them: a batch closes when it holds BatchConfig.MaxFlows flows or
// BatchConfig.MaxDelay after its first flow. Each batch gets a unique ID:
// 8 random bytes naming this Batcher, then a sequence number (NewBatchID).
//
// Add, Flush and Stop are safe for concurrent use. Batches are published
// from the goroutine whose Add filled them (or the timer's), so a slow
// Producer slows the collectors down (backpressure) instead of buffering
// without bound.
type Batcher struct {
	cfg      BatchConfig
	p        Producer
	log      *slog.Logger
	m        *metrics
	instance [8]byte
	seq      atomic.Uint64

	mu    sync.Mutex
	cur   []flow.Pseudo
	first time.Time
	free  sync.Pool

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// NewBatcher returns a Batcher that publishes to p.
func NewBatcher(cfg BatchConfig, p Producer, deps Deps) (*Batcher, error) {
	if cfg.MaxFlows < 1 || cfg.MaxDelay <= 0 {
		return nil, fmt.Errorf("batcher: max_flows and max_delay must be positive")
	}
	b := &Batcher{cfg: cfg, p: p, log: deps.logger("batcher"), m: newMetrics(deps.Registerer)}
	if _, err := rand.Read(b.instance[:]); err != nil {
		return nil, fmt.Errorf("batcher: instance id: %w", err)
	}
	return b, nil
}

// Instance returns the 8 bytes that start every batch ID of b.
func (b *Batcher) Instance() [8]byte { return b.instance }

// Start starts the timer that publishes batches older than MaxDelay.
func (b *Batcher) Start(ctx context.Context) error {
	ctx, b.cancel = context.WithCancel(ctx)
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		tick := time.NewTicker(max(b.cfg.MaxDelay/4, time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				b.mu.Lock()
				if len(b.cur) == 0 || now.Sub(b.first) < b.cfg.MaxDelay {
					b.mu.Unlock()
					continue
				}
				batch := b.take()
				b.mu.Unlock()
				if err := b.publish(ctx, batch, "time"); err != nil && ctx.Err() == nil {
					b.log.Error("publish batch failed", "err", err)
				}
			}
		}
	}()
	return nil
}

// Add appends flows to the current batch, publishing it when full.
func (b *Batcher) Add(ctx context.Context, flows ...flow.Pseudo) error {
	for len(flows) > 0 {
		b.mu.Lock()
		if b.cur == nil {
			b.cur = b.newBuf()
		}
		if len(b.cur) == 0 {
			b.first = time.Now()
		}
		n := min(len(flows), b.cfg.MaxFlows-len(b.cur))
		b.cur = append(b.cur, flows[:n]...)
		flows = flows[n:]
		if len(b.cur) < b.cfg.MaxFlows {
			b.mu.Unlock()
			return nil
		}
		batch := b.take()
		b.mu.Unlock()
		if err := b.publish(ctx, batch, "size"); err != nil {
			return err
		}
	}
	return nil
}

// Flush publishes the current batch, if any.
func (b *Batcher) Flush(ctx context.Context) error {
	b.mu.Lock()
	if len(b.cur) == 0 {
		b.mu.Unlock()
		return nil
	}
	batch := b.take()
	b.mu.Unlock()
	return b.publish(ctx, batch, "flush")
}

// Stop stops the timer and publishes the current batch, waiting at most
// 30 seconds for the Producer. It is idempotent.
func (b *Batcher) Stop() error {
	var err error
	b.once.Do(func() {
		if b.cancel != nil {
			b.cancel()
			<-b.done
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = b.Flush(ctx)
	})
	return err
}

// take returns the current batch with a new ID; b.mu must be held.
func (b *Batcher) take() flow.Batch {
	batch := flow.Batch{ID: NewBatchID(b.instance, b.seq.Add(1)), Flows: b.cur}
	b.cur = nil
	return batch
}

func (b *Batcher) newBuf() []flow.Pseudo {
	if v, ok := b.free.Get().(*[]flow.Pseudo); ok {
		return (*v)[:0]
	}
	return make([]flow.Pseudo, 0, b.cfg.MaxFlows)
}

func (b *Batcher) publish(ctx context.Context, batch flow.Batch, reason string) error {
	b.m.batches.WithLabelValues(reason).Inc()
	err := b.p.Publish(ctx, batch)
	if err != nil {
		b.m.droppedFlows.WithLabelValues("publish_error").Add(float64(len(batch.Flows)))
		err = fmt.Errorf("publish batch %s: %w", batch.ID, err)
	}
	// Publish does not retain the flows: reuse the buffer.
	buf := batch.Flows[:0]
	b.free.Put(&buf)
	return err
}
