package bus

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowarrow"
	"github.com/ccflow/ccflow/flow/flowtest"
)

// Fast tests of the Kafka bus against kfake (an in-memory Kafka). The same
// scenarios run against the real broker in kafka_real_test.go; kfake is
// never the only test.

func kfakeCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func TestKfakeGroupEndToEnd(t *testing.T) {
	testGroupEndToEnd(t, kfakeCluster(t), 30_000)
}

func TestKfakeBadInput(t *testing.T) {
	testBadInput(t, kfakeCluster(t))
}

// testConfig returns a Kafka configuration for a test on brokers, with
// topics and group of its own.
func testConfig(t testing.TB, brokers []string) KafkaConfig {
	var r [4]byte
	_, _ = rand.Read(r[:])
	suffix := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + hex.EncodeToString(r[:])
	c := DefaultConfig().Kafka
	c.Brokers = brokers
	c.Topic = "flows-" + suffix
	c.DeadLetterTopic = "dead-" + suffix
	c.Group = "detect-" + suffix
	c.Partitions = 4
	c.Spool.Dir = t.TempDir()
	c.Spool.RetryInterval = 200 * time.Millisecond
	c.FetchMaxWait = 100 * time.Millisecond
	return c
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// consumed is what one consumer received.
type consumed struct {
	flows     int
	bytes     uint64
	endpoints map[[16]byte]bool
	dups      int
	// commitErrors counts failed commits: expected while the broker is
	// down (the deliveries come again), an error otherwise.
	commitErrors int
}

// consume fetches from c until stop is closed, committing every delivery
// (as a detector does after its checkpoint), dropping duplicate batches,
// and adding flows to total.
func consume(ctx context.Context, t testing.TB, c Consumer, total *atomic.Int64, stop <-chan struct{}) *consumed {
	out := &consumed{endpoints: map[[16]byte]bool{}}
	dedup := NewDedup(1 << 16)
	for {
		select {
		case <-stop:
			return out
		default:
		}
		fctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		d, err := c.Fetch(fctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				continue
			}
			if ctx.Err() == nil {
				t.Errorf("fetch: %v", err)
			}
			return out
		}
		if dedup.Seen(d.Batch.ID) {
			out.dups++
		} else {
			for i := range d.Batch.Flows {
				f := &d.Batch.Flows[i]
				out.bytes += f.Bytes
				out.endpoints[PartitionKey(f)] = true
			}
			out.flows += len(d.Batch.Flows)
			total.Add(int64(len(d.Batch.Flows)))
		}
		if err := c.Commit(ctx, d); err != nil && ctx.Err() == nil {
			t.Logf("commit: %v", err)
			out.commitErrors++
		}
	}
}

// waitGroupStable waits until the consumer group has n members that all
// have partitions assigned.
func waitGroupStable(ctx context.Context, t testing.TB, brokers []string, group string, n int) {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	for {
		res, err := cl.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "Stable" && len(res.Groups[0].Members) == n {
			ok := true
			for _, m := range res.Groups[0].Members {
				if len(m.MemberAssignments.Topics) == 0 {
					ok = false
				}
			}
			if ok {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer group %s did not become stable with %d members: %v", group, n, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// testGroupEndToEnd publishes realistic flows through a Batcher and a
// KafkaProducer, consumes them with a group of two consumers, and checks
// that every endpoint landed on exactly one consumer and that counts and
// byte sums match.
func testGroupEndToEnd(t *testing.T, brokers []string, nflows int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := testConfig(t, brokers)
	reg := prometheus.NewRegistry()
	deps := Deps{Registerer: reg, Logger: slog.New(slog.NewTextHandler(&syncBuffer{}, nil))}

	var cons []*KafkaConsumer
	for i := 0; i < 2; i++ {
		c, err := NewKafkaConsumer(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		cons = append(cons, c)
	}
	var total atomic.Int64
	stop := make(chan struct{})
	results := make([]*consumed, 2)
	var wg sync.WaitGroup
	for i, c := range cons {
		wg.Add(1)
		go func(i int, c *KafkaConsumer) {
			defer wg.Done()
			results[i] = consume(ctx, t, c, &total, stop)
		}(i, c)
	}
	waitGroupStable(ctx, t, brokers, cfg.Group, 2)

	p, err := NewKafkaProducer(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := NewBatcher(BatchConfig{MaxFlows: 5000, MaxDelay: 100 * time.Millisecond}, p, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	flows := flowtest.Flows(11, nflows)
	var wantBytes uint64
	wantEndpoints := map[[16]byte]bool{}
	for i := range flows {
		wantBytes += flows[i].Bytes
		wantEndpoints[PartitionKey(&flows[i])] = true
	}
	for i := 0; i < len(flows); i += 997 {
		if err := b.Add(ctx, flows[i:min(i+997, len(flows))]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	for total.Load() < int64(nflows) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	var gotFlows int
	var gotBytes uint64
	for i, r := range results {
		t.Logf("consumer %d: %d flows, %d endpoints, %d duplicate batches", i, r.flows, len(r.endpoints), r.dups)
		if r.flows == 0 {
			t.Errorf("consumer %d received nothing: partitions not shared", i)
		}
		if r.commitErrors > 0 {
			t.Errorf("consumer %d: %d commits failed", i, r.commitErrors)
		}
		gotFlows += r.flows
		gotBytes += r.bytes
	}
	if gotFlows != nflows || gotBytes != wantBytes {
		t.Errorf("received %d flows / %d bytes, want %d / %d", gotFlows, gotBytes, nflows, wantBytes)
	}
	both := 0
	for e := range results[0].endpoints {
		if results[1].endpoints[e] {
			both++
		}
	}
	if both > 0 {
		t.Errorf("%d remote endpoints reached both consumers", both)
	}
	if n := len(results[0].endpoints) + len(results[1].endpoints); n != len(wantEndpoints) {
		t.Errorf("%d endpoints received, want %d", n, len(wantEndpoints))
	}
	if got := testutil.ToFloat64(p.m.producedFlows); int(got) != nflows {
		t.Errorf("ccflow_bus_produced_flows_total = %v, want %d", got, nflows)
	}
	if got := testutil.ToFloat64(p.m.producedBytes); got > 0 {
		t.Logf("wire size: %.1f bytes/flow", got/float64(nflows))
	}
}

// testBadInput writes a good message, a corrupt Arrow payload, a payload
// with an unknown schema version and another good message, and checks that
// the consumer delivers the good ones, counts, logs and dead-letters the
// bad ones.
func testBadInput(t *testing.T, brokers []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig(t, brokers)
	cfg.Partitions = 1
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	deps := Deps{Registerer: reg, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	c, err := NewKafkaConsumer(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	enc := flowarrow.NewEncoder(flowarrow.CompressionFrameZstd)
	good := func(id byte, n int) kafka.Message {
		val, err := enc.Encode(nil, flow.BatchID{id}, flowtest.Flows(uint64(id), n))
		if err != nil {
			t.Fatal(err)
		}
		return newMessage(0, flow.BatchID{id}, n, val, enc.WireVersion())
	}
	corrupt := good(2, 10)
	corrupt.Value = append([]byte(nil), corrupt.Value...)
	corrupt.Value[len(corrupt.Value)/2] ^= 0xff
	future := good(3, 10)
	future.Headers[0].Value = []byte("99")
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: cfg.Topic, Balancer: keyBalancer{}, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	if err := w.WriteMessages(ctx, good(1, 100), corrupt, future, good(4, 50)); err != nil {
		t.Fatal(err)
	}

	var ids []flow.BatchID
	var flows int
	for len(ids) < 2 {
		d, err := c.Fetch(ctx)
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		ids = append(ids, d.Batch.ID)
		flows += len(d.Batch.Flows)
		if err := c.Commit(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if ids[0] != (flow.BatchID{1}) || ids[1] != (flow.BatchID{4}) || flows != 150 {
		t.Errorf("delivered %v (%d flows), want batches 01.. and 04.. (150 flows)", ids, flows)
	}
	for reason, want := range map[string]float64{"corrupt": 1, "schema_version": 1} {
		if got := testutil.ToFloat64(c.m.badMessages.WithLabelValues(reason)); got != want {
			t.Errorf("ccflow_bus_bad_messages_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := testutil.ToFloat64(c.m.deadLettered); got != 2 {
		t.Errorf("ccflow_bus_dead_lettered_messages_total = %v, want 2", got)
	}
	if !strings.Contains(logs.String(), "unreadable message sent to the dead-letter topic") {
		t.Errorf("bad message not logged:\n%s", logs.String())
	}

	// The dead-letter topic holds both, with the reason.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: cfg.DeadLetterTopic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	reasons := map[string]bool{}
	for i := 0; i < 2; i++ {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read dead-letter topic: %v", err)
		}
		for _, h := range m.Headers {
			if h.Key == HeaderDeadReason {
				reasons[string(h.Value)] = true
			}
		}
	}
	if !reasons["corrupt"] || !reasons["schema_version"] {
		t.Errorf("dead-letter reasons = %v", reasons)
	}
}
