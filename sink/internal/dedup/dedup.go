// Package dedup remembers the flow batches a sink stored recently, so that
// a batch delivered twice (the bus is at-least-once: after a rebalance the
// batches after the last committed offset come again) is stored once. It is
// bounded: it forgets the oldest batch once full, and it forgets everything
// when the process ends, so queries still de-duplicate by batch_id
// (docs/storage.md); this only keeps the common case out of the tables.
package dedup

import "github.com/ccflow/ccflow/flow"

// Size is the number of batches a sink remembers: 65536, about 5.5 MiB
// (TestMemory).
// The analysis stage drops redelivered batches with a window of the same
// size; this one protects writers fed by other paths too.
const Size = 1 << 16

// Key identifies a batch's content. The batch ID alone is not enough:
// parquet.ReadFlows returns a batch that the sink split at midnight UTC as
// two batches with the same ID, and both halves must be stored when they
// are written again (ccflow replay). The row count and the first flow's
// start second tell such halves apart (they start on different days); a
// redelivered batch has all three equal. 24 bytes.
type Key struct {
	id    flow.BatchID
	rows  uint32
	first uint32 // Unix seconds of the first flow's start
}

// KeyOf returns the key of b, and false when b cannot be recognised (no
// batch ID, or no rows): such batches are never dropped.
func KeyOf(b flow.Batch) (Key, bool) {
	if b.ID == (flow.BatchID{}) || len(b.Flows) == 0 {
		return Key{}, false
	}
	return Key{id: b.ID, rows: uint32(len(b.Flows)), first: uint32(b.Flows[0].TimeStartMs / 1000)}, true
}

// Recent is a set of the last keys added. It is not safe for concurrent
// use: the sink calls it under its own lock.
type Recent struct {
	set  map[Key]struct{}
	ring []Key
	next int
}

// New returns a Recent that remembers the last size keys (at least 1).
func New(size int) *Recent {
	size = max(size, 1)
	return &Recent{set: make(map[Key]struct{}, size), ring: make([]Key, 0, size)}
}

// Contains reports whether k is among the remembered keys.
func (r *Recent) Contains(k Key) bool {
	_, ok := r.set[k]
	return ok
}

// Add remembers k, forgetting the oldest key when full. Adding a key
// already remembered does nothing.
func (r *Recent) Add(k Key) {
	if _, ok := r.set[k]; ok {
		return
	}
	if len(r.ring) < cap(r.ring) {
		r.ring = append(r.ring, k)
	} else {
		delete(r.set, r.ring[r.next])
		r.ring[r.next] = k
		r.next = (r.next + 1) % len(r.ring)
	}
	r.set[k] = struct{}{}
}

// Reset forgets every key: a sink that dropped rows must accept their
// batches again.
func (r *Recent) Reset() {
	clear(r.set)
	r.ring = r.ring[:0]
	r.next = 0
}

// Len returns the number of remembered keys.
func (r *Recent) Len() int { return len(r.set) }
