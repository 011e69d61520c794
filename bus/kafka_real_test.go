package bus

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/flow/flowtest"
	"github.com/ccflow/ccflow/testenv"
)

// Tests against the real Apache Kafka broker of scripts/kafka.sh
// (CCFLOW_TEST_KAFKA, set by `make test`; `make kafka-up` prints it). They
// skip on a laptop without it and fail in CI.

func realBroker(t testing.TB) []string {
	t.Helper()
	return []string{testenv.Service(t, "CCFLOW_TEST_KAFKA")}
}

func TestKafkaGroupEndToEnd(t *testing.T) {
	testGroupEndToEnd(t, realBroker(t), 200_000)
}

func TestKafkaBadInput(t *testing.T) {
	testBadInput(t, realBroker(t))
}

// ownBroker starts a broker of the test's own with scripts/kafka.sh in a
// temporary state directory (so the test can kill it) and returns its
// address, a kill -9 function and a restart function.
func ownBroker(t *testing.T) (addr string, kill9 func(), restart func()) {
	t.Helper()
	testenv.Tool(t, "java")
	script := filepath.Join(testenv.Root(t), "scripts", "kafka.sh")
	state := t.TempDir()
	up := func() string {
		cmd := exec.Command(script, "up")
		cmd.Env = append(os.Environ(), "KAFKA_STATE_DIR="+state)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kafka.sh up: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return strings.TrimPrefix(lines[len(lines)-1], "KAFKA_ADDR=")
	}
	addr = up()
	t.Cleanup(func() {
		cmd := exec.Command(script, "down")
		cmd.Env = append(os.Environ(), "KAFKA_STATE_DIR="+state)
		_ = cmd.Run()
	})
	kill9 = func() {
		b, err := os.ReadFile(filepath.Join(state, "broker.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for syscall.Kill(pid, 0) == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	restart = func() {
		if got := up(); got != addr {
			t.Fatalf("restarted broker on %s, want %s", got, addr)
		}
	}
	return addr, kill9, restart
}

// TestKafkaBrokerKilled kills the broker with SIGKILL while flows stream,
// keeps publishing through the outage, restarts it, and checks that every
// flow arrives at least once, exactly once after de-duplication by batch
// ID, that the spool is empty and that the metrics show the outage.
func TestKafkaBrokerKilled(t *testing.T) {
	realBroker(t) // CI must provide Kafka (and so java) for this test
	addr, kill9, restart := ownBroker(t)
	brokers := []string{addr}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := testConfig(t, brokers)
	cfg.MaxAttempts = 2
	cfg.RetryBackoff = 50 * time.Millisecond
	cfg.WriteTimeout = 3 * time.Second
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
	var total atomic.Int64
	stop := make(chan struct{})
	var res *consumed
	var wg sync.WaitGroup
	consumerDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(consumerDone)
		res = consume(ctx, t, c, &total, stop)
	}()
	waitGroupStable(ctx, t, brokers, cfg.Group, 1)

	p, err := NewKafkaProducer(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	gen := flowtest.New(21, flowtest.Options{})
	const batches, perBatch = 60, 5000
	var wantBytes uint64
	inst := [8]byte{0xfa, 0x17}
	for i := 0; i < batches; i++ {
		switch i {
		case 20:
			t.Log("kill -9 the broker")
			kill9()
		case 40:
			if n, _ := p.SpoolLen(); n == 0 {
				t.Error("nothing spooled during the outage")
			}
			t.Log("restart the broker")
			restart()
		}
		flows := gen.Flows(perBatch)
		for j := range flows {
			wantBytes += flows[j].Bytes
		}
		if err := p.Publish(ctx, flow.Batch{ID: NewBatchID(inst, uint64(i+1)), Flows: flows}); err != nil {
			t.Fatalf("publish batch %d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.WaitDrained(ctx); err != nil {
		t.Fatalf("spool did not drain: %v", err)
	}
wait:
	for total.Load() < batches*perBatch && ctx.Err() == nil {
		select {
		case <-consumerDone:
			break wait
		case <-time.After(50 * time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	if err := p.Stop(); err != nil {
		t.Error(err)
	}
	t.Logf("consumed %d flows after dedup, %d duplicate batches dropped", res.flows, res.dups)
	if res.flows != batches*perBatch || res.bytes != wantBytes {
		t.Errorf("after dedup: %d flows / %d bytes, want %d / %d", res.flows, res.bytes, batches*perBatch, wantBytes)
	}
	if n, b := p.SpoolLen(); n != 0 || b != 0 {
		t.Errorf("spool holds %d messages / %d bytes after recovery", n, b)
	}
	for name, check := range map[string]func(float64) bool{
		"ccflow_bus_kafka_outages_total":          func(v float64) bool { return v >= 1 },
		"ccflow_bus_produce_errors_total":         func(v float64) bool { return v >= 1 },
		"ccflow_bus_spooled_messages_total":       func(v float64) bool { return v >= 1 },
		"ccflow_bus_spool_drained_messages_total": func(v float64) bool { return v >= 1 },
		"ccflow_bus_kafka_up":                     func(v float64) bool { return v == 1 },
		"ccflow_bus_spool_messages":               func(v float64) bool { return v == 0 },
		"ccflow_bus_dropped_flows_total":          func(v float64) bool { return v == 0 },
	} {
		v := gatherValue(t, reg, name)
		t.Logf("%s = %v", name, v)
		if !check(v) {
			t.Errorf("%s = %v: outage not visible or not recovered", name, v)
		}
	}
}

// gatherValue returns the sum of a metric's samples in reg.
func gatherValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// BenchmarkKafkaEndToEnd measures flows per second through the real broker
// (encode, produce with acks=all, fetch, decode, commit every message) with
// one producer and one consumer in this process, the bytes per flow on the
// wire, and the CPU time per flow: of this process (producer and
// consumer), of the broker (when its pid is known: scripts/kafka.sh's
// state directory, KAFKA_STATE_DIR or .kafka/run, holding this broker's
// address) and both. CPU time is what a loaded, shared machine does not
// distort: 2e9 / cpu-ns/flow is the rate two otherwise idle cores would
// sustain. Each iteration is one batch of 65,536 flows of flowtest's
// default population, split over the topic's partitions.
//
//	make kafka-up   # prints KAFKA_ADDR=...
//	CCFLOW_TEST_KAFKA=127.0.0.1:PORT go test ./bus -run '^$' -bench KafkaEndToEnd -benchtime 40x
func BenchmarkKafkaEndToEnd(b *testing.B) {
	for _, parts := range []int{4, 8} {
		b.Run("p"+strconv.Itoa(parts), func(b *testing.B) { benchKafkaEndToEnd(b, parts) })
	}
}

func benchKafkaEndToEnd(b *testing.B, partitions int) {
	brokers := realBroker(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := testConfig(b, brokers)
	cfg.Spool.Dir = "" // measure the direct path
	cfg.Partitions = partitions
	reg := prometheus.NewRegistry()
	deps := Deps{Registerer: reg}
	c, err := NewKafkaConsumer(cfg, deps)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	p, err := NewKafkaProducer(cfg, deps)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer p.Stop()
	// A pool of distinct flows, published round robin with fresh IDs.
	const perBatch = 65536
	pool := flowtest.New(31, flowtest.Options{}).Flows(8 * perBatch)
	waitGroupStable(ctx, b, brokers, cfg.Group, 1)
	brokerPid := brokerPID(brokers[0])

	runtime.GC()
	b.ResetTimer()
	start := time.Now()
	cpu0, bcpu0 := processCPU(os.Getpid()), processCPU(brokerPid)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for got.Load() < int64(b.N*perBatch) {
			d, err := c.Fetch(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			got.Add(int64(len(d.Batch.Flows)))
			if err := c.Commit(ctx, d); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	// Publishers run on every core, as collector workers do.
	inst := [8]byte{0xbe, 0x4c}
	var next atomic.Int64
	var pubs sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := int(next.Add(1) - 1); i < b.N; i = int(next.Add(1) - 1) {
				off := (i % 8) * perBatch
				if err := p.Publish(ctx, flow.Batch{ID: NewBatchID(inst, uint64(i+1)), Flows: pool[off : off+perBatch]}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	pubs.Wait()
	if err := p.WaitDrained(ctx); err != nil {
		b.Fatal(err)
	}
	produced := time.Since(start)
	<-done
	el := time.Since(start)
	cpu, bcpu := processCPU(os.Getpid())-cpu0, processCPU(brokerPid)-bcpu0
	b.StopTimer()
	flows := float64(b.N * perBatch)
	b.ReportMetric(flows/el.Seconds(), "flows/s")
	b.ReportMetric(flows/produced.Seconds(), "produced-flows/s")
	b.ReportMetric(testutil.ToFloat64(p.m.producedBytes)/flows, "wireB/flow")
	b.ReportMetric(float64(cpu.Nanoseconds())/flows, "go-cpu-ns/flow")
	if brokerPid > 0 {
		b.ReportMetric(float64(bcpu.Nanoseconds())/flows, "broker-cpu-ns/flow")
		b.ReportMetric(float64((cpu+bcpu).Nanoseconds())/flows, "cpu-ns/flow")
	}
	b.ReportMetric(0, "ns/op")
}

// brokerPID returns the pid of the scripts/kafka.sh broker listening on
// addr, or 0 when its state directory is not found.
func brokerPID(addr string) int {
	dirs := []string{os.Getenv("KAFKA_STATE_DIR")}
	if root, err := os.Getwd(); err == nil {
		dirs = append(dirs, filepath.Join(root, "..", ".kafka", "run"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		a, err1 := os.ReadFile(filepath.Join(d, "addr"))
		p, err2 := os.ReadFile(filepath.Join(d, "broker.pid"))
		if err1 != nil || err2 != nil || strings.TrimSpace(string(a)) != addr {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(p))); err == nil {
			return pid
		}
	}
	return 0
}

// processCPU returns the user+system CPU time of process pid so far (0
// when unknown), from /proc/PID/stat.
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTicks = 100
