package bus_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/ccflow/ccflow/bus"
	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy"
	"github.com/ccflow/ccflow/testenv"
)

// pipe is the collector's handler: privacy, then the bus batcher. It
// counts what it hands to the bus.
type pipe struct {
	stage *privacy.Stage
	b     *bus.Batcher
	mu    sync.Mutex
	recs  int
	flows int
	bytes uint64
	last  time.Time
	buf   []flow.Pseudo
}

func (p *pipe) HandleFlows(_ int, recs []flow.Record) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = p.stage.Pseudonymize(recs, p.buf[:0])
	p.recs += len(recs)
	p.flows += len(p.buf)
	for i := range p.buf {
		p.bytes += p.buf[i].Bytes
	}
	p.last = time.Now()
	if err := p.b.Add(context.Background(), p.buf...); err != nil {
		panic(err)
	}
}

// TestSoftflowdToKafka is the acceptance path: softflowd exports two real
// captures (NetFlow v9 and IPFIX) to the collector, the privacy stage
// pseudonymizes the flows (subscribers 147.32.0.0/16), the bus carries them
// through the real Kafka broker to a group of two consumers; every remote
// endpoint lands on exactly one consumer and counts and byte sums match.
func TestSoftflowdToKafka(t *testing.T) {
	addr := testenv.Service(t, "CCFLOW_TEST_KAFKA")
	softflowd := testenv.Tool(t, "softflowd")
	captures := []string{
		testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap"),
		testenv.Data(t, "slips-test-cc", "test-cc-capture-2.pcap"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	deps := bus.Deps{Registerer: reg}

	cfg := bus.DefaultConfig().Kafka
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg.Brokers = []string{addr}
	cfg.Topic, cfg.DeadLetterTopic, cfg.Group = "flows-softflowd-"+suffix, "dead-softflowd-"+suffix, "detect-softflowd-"+suffix
	cfg.Partitions = 4
	cfg.Spool.Dir = t.TempDir()
	cfg.FetchMaxWait = 100 * time.Millisecond

	// Two detectors' consumers, stable before anything is produced.
	type got struct {
		flows     int
		bytes     uint64
		endpoints map[[16]byte]bool
	}
	results := make([]*got, 2)
	var total atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range results {
		c, err := bus.NewKafkaConsumer(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		results[i] = &got{endpoints: map[[16]byte]bool{}}
		wg.Add(1)
		go func(r *got) {
			defer wg.Done()
			dedup := bus.NewDedup(1024)
			for {
				select {
				case <-stop:
					return
				default:
				}
				fctx, fc := context.WithTimeout(ctx, 200*time.Millisecond)
				d, err := c.Fetch(fctx)
				fc()
				if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
					continue
				}
				if err != nil {
					return
				}
				if !dedup.Seen(d.Batch.ID) {
					for i := range d.Batch.Flows {
						f := &d.Batch.Flows[i]
						r.bytes += f.Bytes
						r.endpoints[bus.PartitionKey(f)] = true
					}
					r.flows += len(d.Batch.Flows)
					total.Add(int64(len(d.Batch.Flows)))
				}
				_ = c.Commit(ctx, d)
			}
		}(results[i])
	}
	waitStable(ctx, t, cfg.Brokers, cfg.Group, 2)

	p, err := bus.NewKafkaProducer(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	b, err := bus.NewBatcher(bus.BatchConfig{MaxFlows: 64, MaxDelay: 50 * time.Millisecond}, p, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}

	pcfg := privacy.DefaultConfig()
	pcfg.Subscribers = []string{"147.32.0.0/16"}
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	pcfg.KeysDir = keys
	stage, err := privacy.New(pcfg, privacy.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	h := &pipe{stage: stage, b: b}
	ccfg := collector.DefaultConfig()
	ccfg.NetFlow.Addr, ccfg.IPFIX.Addr, ccfg.SFlow.Addr = "127.0.0.1:0", "127.0.0.1:0", ""
	col, err := collector.New(ccfg, collector.Deps{Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := col.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer col.Stop()
	addrs := col.Addrs()
	for i, capture := range captures {
		v, port := 9, addrs["netflow"]
		if i == 1 {
			v, port = 10, addrs["ipfix"]
		}
		out, err := exec.CommandContext(ctx, softflowd, "-d", "-r", capture, "-n", port.String(), "-v", strconv.Itoa(v)).CombinedOutput()
		if err != nil {
			t.Fatalf("softflowd: %v\n%s", err, out)
		}
	}
	// Wait until the collector has been quiet for a second.
	for {
		h.mu.Lock()
		quiet := h.recs > 0 && time.Since(h.last) > time.Second
		h.mu.Unlock()
		if quiet || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitDrained(ctx); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	wantFlows, wantBytes, recs := h.flows, h.bytes, h.recs
	h.mu.Unlock()
	for total.Load() < int64(wantFlows) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	t.Logf("softflowd -> collector: %d records; privacy -> bus: %d flows, %d bytes", recs, wantFlows, wantBytes)
	if wantFlows == 0 {
		t.Fatal("no flows reached the bus")
	}
	var gotFlows int
	var gotBytes uint64
	for i, r := range results {
		t.Logf("consumer %d: %d flows, %d remote endpoints", i, r.flows, len(r.endpoints))
		gotFlows += r.flows
		gotBytes += r.bytes
	}
	if gotFlows != wantFlows || gotBytes != wantBytes {
		t.Errorf("consumers got %d flows / %d bytes, want %d / %d", gotFlows, gotBytes, wantFlows, wantBytes)
	}
	for e := range results[0].endpoints {
		if results[1].endpoints[e] {
			t.Errorf("endpoint %v reached both consumers", netip.AddrFrom16(e).Unmap())
		}
	}
}

func waitStable(ctx context.Context, t *testing.T, brokers []string, group string, n int) {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		res, err := cl.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err == nil && len(res.Groups) == 1 && res.Groups[0].GroupState == "Stable" && len(res.Groups[0].Members) == n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("consumer group %s not stable with %d members", group, n)
}
