package bus

import (
	"context"
	"crypto/rand"
	"errors"
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

	cancel   context.CancelFunc // ends the timer loop
	hardStop context.CancelFunc // aborts its publish: Stop gave up waiting
	lateErr  error              // a timer publish that failed once Stop began
	done     chan struct{}
	once     sync.Once
}

// stopTimeout bounds how long Stop waits for the publishes it must finish:
// the timer's batch in flight, then the current batch.
const stopTimeout = 30 * time.Second

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

// Start starts the timer that publishes batches older than MaxDelay. The
// timer runs until Stop or the end of ctx; a publish it has begun is not
// canceled by either (its flows were accepted by Add), only by Stop giving
// up after stopTimeout.
func (b *Batcher) Start(ctx context.Context) error {
	loopCtx, cancel := context.WithCancel(ctx)
	pubCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	b.cancel, b.hardStop = cancel, hardStop
	b.done = make(chan struct{})
	go func() {
		defer close(b.done)
		tick := time.NewTicker(max(b.cfg.MaxDelay/4, time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-loopCtx.Done():
				return
			case now := <-tick.C:
				b.mu.Lock()
				if len(b.cur) == 0 || now.Sub(b.first) < b.cfg.MaxDelay {
					b.mu.Unlock()
					continue
				}
				batch := b.take()
				n := len(batch.Flows)
				b.mu.Unlock()
				if err := b.publish(pubCtx, batch, "time"); err != nil {
					b.log.Error("publish batch failed; its flows are dropped", "flows", n, "err", err)
					if loopCtx.Err() != nil {
						b.lateErr = err // read by Stop after done closes
					}
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

// Stop stops the timer, lets a publish the timer has begun finish, then
// publishes the current batch, waiting at most stopTimeout (30 s) in all
// for the Producer. It returns an error naming any batch it could not
// publish: those flows are lost (and counted in
// ccflow_bus_dropped_flows_total). Call it after the last Add has
// returned. It is idempotent.
func (b *Batcher) Stop() error {
	var err error
	b.once.Do(func() {
		deadline := time.Now().Add(stopTimeout)
		if b.cancel != nil {
			b.cancel()
			t := time.AfterFunc(stopTimeout, b.hardStop)
			<-b.done
			t.Stop()
			b.hardStop()
			err = b.lateErr
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		err = errors.Join(err, b.Flush(ctx))
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
