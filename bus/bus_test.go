package bus

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowtest"
)

func TestPartitionOf(t *testing.T) {
	flows := flowtest.Flows(1, 20000)
	counts := make([]int, 8)
	for i := range flows {
		k := PartitionKey(&flows[i])
		p := PartitionOf(k, 8)
		if p != PartitionOf(k, 8) {
			t.Fatal("partition not deterministic")
		}
		counts[p]++
	}
	for p, n := range counts {
		if n < 20000/8/3 {
			t.Errorf("partition %d got %d of 20000 flows: badly spread %v", p, n, counts)
		}
	}
	if PartitionOf([16]byte{1}, 1) != 0 || PartitionOf([16]byte{1}, 0) != 0 {
		t.Error("one partition must be 0")
	}
	both := flow.Pseudo{Kind: flow.KindBoth, Peer: flow.Pseudonym{7}}
	if PartitionKey(&both) != [16]byte{7} {
		t.Error("subscriber-to-subscriber flows must be keyed by the peer pseudonym")
	}
}

func TestBatchIDs(t *testing.T) {
	inst := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	a, b := NewBatchID(inst, 1), NewBatchID(inst, 2)
	if a == b || PartID(a, 1) == a || PartID(a, 0) != a || PartID(a, 65535) == b {
		t.Errorf("ids collide: %s %s %s", a, b, PartID(a, 1))
	}
	if got := a.String(); got != "01020304050607080000000000010000" {
		t.Errorf("id = %s", got)
	}
}

func TestDedup(t *testing.T) {
	d := NewDedup(3)
	ids := []flow.BatchID{{1}, {2}, {1}, {3}, {4}, {1}, {4}}
	var got []bool
	for _, id := range ids {
		got = append(got, d.Seen(id))
	}
	want := []bool{false, false, true, false, false, false, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("seen (-want +got):\n%s", diff)
	}
	if d.Len() != 3 {
		t.Errorf("len %d, want 3 (bounded)", d.Len())
	}
}

func testMessage(i int, size int) kafka.Message {
	return kafka.Message{
		Key:     []byte{0, 0, 0, byte(i % 4)},
		Value:   []byte(fmt.Sprintf("%0*d", size, i)),
		Headers: []kafka.Header{{Key: HeaderFlows, Value: []byte("1")}, {Key: "x", Value: []byte{byte(i)}}},
	}
}

func TestSpool(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 10_000, 1_000)
	if err != nil {
		t.Fatal(err)
	}
	var in []kafka.Message
	for i := 0; i < 100; i++ {
		in = append(in, testMessage(i, 100))
	}
	n, err := s.Append(in)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n == 100 {
		t.Fatalf("appended %d of 100 messages into a 10 kB spool", n)
	}
	msgs, _ := s.Len()
	if msgs != n {
		t.Fatalf("len %d, want %d", msgs, n)
	}
	// Drain half, reopen (a restart), drain the rest: all in order, once.
	var out []kafka.Message
	drain := func(s *spool, limit int) {
		for len(out) < limit {
			got, err := s.Peek(3, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				return
			}
			out = append(out, got...)
			if err := s.Ack(len(got)); err != nil {
				t.Fatal(err)
			}
		}
	}
	drain(s, n/2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = openSpool(dir, 10_000, 1_000)
	if err != nil {
		t.Fatal(err)
	}
	// A restart resends the rest of a half-drained segment: skip repeats.
	seen := map[string]bool{}
	for _, m := range out {
		seen[string(m.Value)] = true
	}
	drain(s, 1<<30)
	var uniq []string
	for _, m := range out {
		if !seen[string(m.Value)] || len(uniq) < n/2 {
			uniq = append(uniq, string(m.Value))
		}
		seen[string(m.Value)] = true
	}
	if len(seen) != n {
		t.Fatalf("drained %d distinct messages, want %d", len(seen), n)
	}
	if m, b := s.Len(); m != 0 || b != 0 {
		t.Errorf("spool not empty after drain: %d messages, %d bytes", m, b)
	}
	if diff := cmp.Diff(in[0].Headers, out[0].Headers); diff != "" {
		t.Errorf("headers changed (-want +got):\n%s", diff)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(files) != 0 {
		t.Errorf("segments left after drain: %v", files)
	}
}

func TestSpoolTornRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([]kafka.Message{testMessage(1, 10), testMessage(2, 10)}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, err := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte{200, 0, 0, 0, 1, 2}) // a torn third record
	_ = f.Close()
	s, err = openSpool(dir, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Peek(10, 1<<20)
	if err != nil || len(got) != 2 {
		t.Fatalf("peek = %d messages, %v; want the 2 intact ones", len(got), err)
	}
	if err := s.Ack(2); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Len(); m != 0 {
		t.Errorf("%d messages left", m)
	}
}

// fakeProducer records published batches (copying the flows, as Publish
// must not retain them).
type fakeProducer struct {
	mu      sync.Mutex
	batches []flow.Batch
}

func (f *fakeProducer) Publish(_ context.Context, b flow.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, flow.Batch{ID: b.ID, Flows: append([]flow.Pseudo(nil), b.Flows...)})
	return nil
}

func (f *fakeProducer) get() []flow.Batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]flow.Batch(nil), f.batches...)
}

func TestBatcher(t *testing.T) {
	fp := &fakeProducer{}
	reg := prometheus.NewRegistry()
	b, err := NewBatcher(BatchConfig{MaxFlows: 100, MaxDelay: 50 * time.Millisecond}, fp, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	flows := flowtest.Flows(2, 250)
	// Several workers at once.
	var wg sync.WaitGroup
	for w := 0; w < 5; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w * 50; i < (w+1)*50; i += 10 {
				if err := b.Add(ctx, flows[i:i+10]...); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	// 250 flows: two full batches now, the last 50 after MaxDelay.
	deadline := time.Now().Add(5 * time.Second)
	for total(fp.get()) < 250 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	got := fp.get()
	if total(got) != 250 {
		t.Fatalf("published %d flows, want 250", total(got))
	}
	ids := map[flow.BatchID]bool{}
	for _, bt := range got {
		if ids[bt.ID] {
			t.Errorf("batch id %s used twice", bt.ID)
		}
		ids[bt.ID] = true
		if len(bt.Flows) > 100 {
			t.Errorf("batch of %d flows, max 100", len(bt.Flows))
		}
		if [8]byte(bt.ID[:8]) != b.Instance() {
			t.Errorf("batch id %s does not start with the instance", bt.ID)
		}
	}
	if n := testutil.ToFloat64(b.m.batches.WithLabelValues("size")); n != 2 {
		t.Errorf("size-closed batches = %v, want 2", n)
	}
	if n := testutil.ToFloat64(b.m.batches.WithLabelValues("time")); n != 1 {
		t.Errorf("time-closed batches = %v, want 1", n)
	}
}

func total(bs []flow.Batch) int {
	n := 0
	for _, b := range bs {
		n += len(b.Flows)
	}
	return n
}

func TestInproc(t *testing.T) {
	b := NewInproc(InprocConfig{Queue: 2}, Deps{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	flows := flowtest.Flows(3, 10)
	if err := b.Publish(ctx, flow.Batch{ID: flow.BatchID{1}, Flows: flows}); err != nil {
		t.Fatal(err)
	}
	flows[0].Bytes = 999999 // the publisher may reuse its slice
	if err := b.Publish(ctx, flow.Batch{ID: flow.BatchID{2}, Flows: flows[:3]}); err != nil {
		t.Fatal(err)
	}
	// Full: Publish blocks until ctx ends.
	short, c2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer c2()
	if err := b.Publish(short, flow.Batch{ID: flow.BatchID{3}, Flows: flows}); err != context.DeadlineExceeded {
		t.Fatalf("publish to a full queue = %v, want deadline exceeded", err)
	}
	d, err := b.Fetch(ctx)
	if err != nil || d.Batch.ID != (flow.BatchID{1}) || len(d.Batch.Flows) != 10 || d.Batch.Flows[0].Bytes == 999999 {
		t.Fatalf("fetch = %v, %v", d.Batch.ID, err)
	}
	if err := b.Commit(ctx, d); err != nil {
		t.Fatal(err)
	}
	_ = b.Stop()
	if err := b.Publish(ctx, flow.Batch{ID: flow.BatchID{4}, Flows: flows}); err != ErrClosed {
		t.Fatalf("publish after stop = %v", err)
	}
	if d, err := b.Fetch(ctx); err != nil || d.Batch.ID != (flow.BatchID{2}) {
		t.Fatalf("queued batch after stop: %v, %v", d.Batch.ID, err)
	}
	if _, err := b.Fetch(ctx); err != ErrClosed {
		t.Fatalf("fetch after drain = %v, want ErrClosed", err)
	}
}

// FuzzSpoolSegment feeds arbitrary bytes to the spool's segment parser (a
// segment file damaged on disk): it never panics, and what it returns is
// exactly the records at the start of the bytes.
func FuzzSpoolSegment(f *testing.F) {
	var seg []byte
	for i, m := range []kafka.Message{testMessage(1, 10), testMessage(2, 0), testMessage(3, 300)} {
		rec := encodeRecord(m)
		seg = binary.LittleEndian.AppendUint32(seg, uint32(len(rec)))
		seg = binary.LittleEndian.AppendUint32(seg, crc32.Checksum(rec, crcTable))
		seg = append(seg, rec...)
		f.Add(append([]byte(nil), seg...))
		if i == 2 {
			f.Add(append(seg, 200, 0, 0, 0, 1, 2)) // torn
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var again []byte
		for _, m := range parseSegment(data) {
			rec := encodeRecord(m)
			again = binary.LittleEndian.AppendUint32(again, uint32(len(rec)))
			again = binary.LittleEndian.AppendUint32(again, crc32.Checksum(rec, crcTable))
			again = append(again, rec...)
		}
		if !bytes.HasPrefix(data, again) {
			t.Fatalf("parsed records do not re-encode to a prefix of the segment")
		}
	})
}

// blockingProducer holds every Publish until release is closed, honoring
// its context meanwhile (as the real producers do).
type blockingProducer struct {
	fakeProducer
	entered chan struct{} // receives once per Publish that starts waiting
	release chan struct{}
}

func (p *blockingProducer) Publish(ctx context.Context, b flow.Batch) error {
	p.entered <- struct{}{}
	select {
	case <-p.release:
		return p.fakeProducer.Publish(ctx, b)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestBatcherStopWaitsForTimedPublish: Stop while the timer's publish is
// blocked on a full bus (the detector behind) must let that publish finish,
// not cancel it. The flows of that batch were accepted by Add, so dropping
// it would lose them silently (it did: TestSIGTERMUnderLoad lost a whole
// one-second batch under CI load).
func TestBatcherStopWaitsForTimedPublish(t *testing.T) {
	p := &blockingProducer{entered: make(chan struct{}, 4), release: make(chan struct{})}
	b, err := NewBatcher(BatchConfig{MaxFlows: 1000, MaxDelay: 20 * time.Millisecond}, p, Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(context.Background(), flowtest.Flows(4, 30)...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.entered: // the timer's publish is now blocked
	case <-time.After(5 * time.Second):
		t.Fatal("the timer did not publish")
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.Stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a publish was still in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(p.release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := total(p.get()); got != 30 {
		t.Fatalf("published %d flows, want 30", got)
	}
	if n := testutil.ToFloat64(b.m.droppedFlows.WithLabelValues("publish_error")); n != 0 {
		t.Errorf("dropped %v flows", n)
	}
}
