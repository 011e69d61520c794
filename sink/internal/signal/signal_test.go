package signal

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestBroadcastWakesAll: every waiter returns nil after one Broadcast, and
// holds the mutex when it does (the counter is only touched under it).
func TestBroadcastWakesAll(t *testing.T) {
	var mu sync.Mutex
	var s Signal
	ready, woken := 0, 0
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			ready++
			if err := s.Wait(context.Background(), &mu); err != nil {
				t.Error(err)
			}
			woken++
		}()
	}
	for {
		mu.Lock()
		if ready == 5 {
			break
		}
		mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	if woken != 0 {
		t.Fatalf("%d waiters returned before Broadcast", woken)
	}
	s.Broadcast()
	mu.Unlock()
	wg.Wait()
	if woken != 5 {
		t.Fatalf("woken = %d, want 5", woken)
	}
}

// TestContextEnds: Wait returns the context's error, with the mutex held,
// and a later Broadcast is not needed.
func TestContextEnds(t *testing.T) {
	var mu sync.Mutex
	var s Signal
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	mu.Lock()
	err := s.Wait(ctx, &mu)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait = %v, want deadline exceeded", err)
	}
	if mu.TryLock() {
		t.Fatal("Wait returned without the mutex held")
	}
	mu.Unlock()
}

// TestBroadcastBeforeWait: a Broadcast with nobody waiting is not kept for
// a later Wait (it is a condition, not a semaphore).
func TestBroadcastBeforeWait(t *testing.T) {
	var mu sync.Mutex
	var s Signal
	mu.Lock()
	s.Broadcast()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Wait(ctx, &mu); err == nil {
		t.Fatal("Wait returned nil without a Broadcast after it began")
	}
	mu.Unlock()
}
