package collector

import (
	"sync"
	"time"
)

// rateLimiter is a token bucket for log lines on per-datagram paths: the
// metrics count every event, the log shows a bounded sample of them.
type rateLimiter struct {
	mu         sync.Mutex
	rate       float64
	burst      float64
	tokens     float64
	last       time.Time
	suppressed int
}

// newRateLimiter allows rate events per second (bursts of up to
// max(1, rate)); a rate of 0 allows none.
func newRateLimiter(rate float64) *rateLimiter {
	b := max(rate, 1)
	return &rateLimiter{rate: rate, burst: b, tokens: b}
}

// allow reports whether an event may be logged now and how many events
// were suppressed since the last allowed one.
func (r *rateLimiter) allow(now time.Time) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rate <= 0 {
		return false, 0
	}
	if !r.last.IsZero() {
		r.tokens = min(r.burst, r.tokens+now.Sub(r.last).Seconds()*r.rate)
	}
	r.last = now
	if r.tokens < 1 {
		r.suppressed++
		return false, 0
	}
	r.tokens--
	n := r.suppressed
	r.suppressed = 0
	return true, n
}
