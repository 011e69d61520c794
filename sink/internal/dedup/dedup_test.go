package dedup

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/ccflow/ccflow/flow"
)

func batch(i uint64, rows int, first int64) flow.Batch {
	var id flow.BatchID
	binary.BigEndian.PutUint64(id[8:], i+1)
	b := flow.Batch{ID: id, Flows: make([]flow.Pseudo, rows)}
	if rows > 0 {
		b.Flows[0].TimeStartMs = first
	}
	return b
}

func TestRecent(t *testing.T) {
	r := New(3)
	keys := make([]Key, 5)
	for i := range keys {
		k, ok := KeyOf(batch(uint64(i), 10, 1000))
		if !ok {
			t.Fatal("batch with an ID not recognised")
		}
		keys[i] = k
	}
	for _, k := range keys[:3] {
		if r.Contains(k) {
			t.Fatal("new key reported as seen")
		}
		r.Add(k)
	}
	r.Add(keys[0]) // again: no effect on the order
	if !r.Contains(keys[0]) || r.Len() != 3 {
		t.Fatalf("Contains(first) = %v, Len = %d", r.Contains(keys[0]), r.Len())
	}
	r.Add(keys[3]) // forgets keys[0], the oldest
	r.Add(keys[4]) // forgets keys[1]
	for i, want := range []bool{false, false, true, true, true} {
		if got := r.Contains(keys[i]); got != want {
			t.Errorf("Contains(key %d) = %v, want %v", i, got, want)
		}
	}
	r.Reset()
	if r.Len() != 0 || r.Contains(keys[4]) {
		t.Error("Reset kept keys")
	}
	r.Add(keys[0])
	if !r.Contains(keys[0]) {
		t.Error("key added after Reset not remembered")
	}
}

func TestKeyOf(t *testing.T) {
	if _, ok := KeyOf(flow.Batch{Flows: make([]flow.Pseudo, 3)}); ok {
		t.Error("batch without an ID recognised")
	}
	if _, ok := KeyOf(batch(1, 0, 0)); ok {
		t.Error("empty batch recognised")
	}
	a, _ := KeyOf(batch(1, 10, 1000))
	b, _ := KeyOf(batch(1, 10, 1000))
	if a != b {
		t.Error("the same batch has two keys")
	}
	// Halves of a batch split at midnight: same ID, other rows and start.
	for _, other := range []flow.Batch{batch(1, 9, 1000), batch(1, 10, 86_400_000)} {
		if k, _ := KeyOf(other); k == a {
			t.Errorf("batch of %d rows starting at %d has the key of another", len(other.Flows), other.Flows[0].TimeStartMs)
		}
	}
}

// TestMemory documents and bounds what a full Recent of Size keys holds.
func TestMemory(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := New(Size)
	for i := range uint64(2 * Size) {
		k, _ := KeyOf(batch(i, 1, 0))
		r.Add(k)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d batches remembered in %.1f MiB", r.Len(), float64(held)/(1<<20))
	if r.Len() != Size {
		t.Errorf("Len = %d, want %d", r.Len(), Size)
	}
	if held > 7<<20 {
		t.Errorf("%d bytes held, want under 7 MiB", held)
	}
	runtime.KeepAlive(r)
}
