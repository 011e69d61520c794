// Package signal is a broadcast condition that a waiter can select on
// together with a context, which sync.Cond cannot do. The sinks use it to
// wake writers waiting for buffer space and Syncs waiting for their rows
// to be stored.
package signal

import (
	"context"
	"sync"
)

// Signal is a condition guarded by the caller's mutex: Wait and Broadcast
// are called with that mutex held. The zero value is ready to use.
type Signal struct {
	ch chan struct{}
}

// Broadcast wakes every goroutine in Wait.
func (s *Signal) Broadcast() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// Wait unlocks mu, waits for the next Broadcast or for ctx to end, and
// locks mu again before it returns: ctx.Err() if ctx ended first, else
// nil. Like sync.Cond.Wait it belongs in a loop that checks the condition
// again.
func (s *Signal) Wait(ctx context.Context, mu *sync.Mutex) error {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	ch := s.ch
	mu.Unlock()
	defer mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
