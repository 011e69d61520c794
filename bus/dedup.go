package bus

import "github.com/ccflow/ccflow/flow"

// Dedup remembers the most recent batch IDs, up to a fixed number, so that
// a detector can drop a batch delivered twice (at-least-once delivery
// redelivers uncommitted batches after a restart or rebalance). Memory is
// bounded: 16 bytes plus a map entry per remembered ID. A Dedup is not safe
// for concurrent use.
type Dedup struct {
	set  map[flow.BatchID]struct{}
	ring []flow.BatchID
	next int
	full bool
}

// NewDedup returns a Dedup that remembers the last size IDs (at least 1).
func NewDedup(size int) *Dedup {
	size = max(size, 1)
	return &Dedup{set: make(map[flow.BatchID]struct{}, size), ring: make([]flow.BatchID, size)}
}

// Seen reports whether id is among the remembered IDs, and remembers it
// if not (forgetting the oldest when full).
func (d *Dedup) Seen(id flow.BatchID) bool {
	if _, ok := d.set[id]; ok {
		return true
	}
	if d.full {
		delete(d.set, d.ring[d.next])
	}
	d.ring[d.next] = id
	d.set[id] = struct{}{}
	d.next++
	if d.next == len(d.ring) {
		d.next, d.full = 0, true
	}
	return false
}

// Len returns the number of remembered IDs.
func (d *Dedup) Len() int { return len(d.set) }

// IDs returns the remembered IDs, oldest first, so that a checkpoint can
// carry them (see analysis).
func (d *Dedup) IDs() []flow.BatchID {
	if !d.full {
		return append([]flow.BatchID(nil), d.ring[:d.next]...)
	}
	out := make([]flow.BatchID, 0, len(d.ring))
	out = append(out, d.ring[d.next:]...)
	return append(out, d.ring[:d.next]...)
}
