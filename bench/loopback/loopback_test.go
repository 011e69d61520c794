package loopback

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/bench/loadgen"
	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/collector/pcap"
	"github.com/ccflow/ccflow/flow"
)

// Environment of the load-generator helper process.
const (
	envTarget   = "CCFLOW_LOOPBACK_TARGET"
	envRate     = "CCFLOW_LOOPBACK_RATE"
	envDuration = "CCFLOW_LOOPBACK_DURATION"
	envSources  = "CCFLOW_LOOPBACK_SOURCES"
)

// corpusFile is what the load generator replays: softflowd NetFlow v9
// datagrams (the peer measurement in DESIGN.md used the same exporter).
var corpusFile = filepath.Join("..", "..", "collector", "testdata", "netflow9.pcap")

func readCorpus(tb testing.TB) [][]byte {
	tb.Helper()
	f, err := os.Open(corpusFile)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	ds, err := pcap.ReadDatagrams(f)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, d := range ds {
		out = append(out, d.Payload)
	}
	return out
}

// TestLoadgenHelper is the load generator's process: BenchmarkLoopback runs
// the test binary again with only this test and the envLoopback* variables.
func TestLoadgenHelper(t *testing.T) {
	target := os.Getenv(envTarget)
	if target == "" {
		t.Skip("helper process of BenchmarkLoopback")
	}
	rate, _ := strconv.ParseFloat(os.Getenv(envRate), 64)
	d, _ := time.ParseDuration(os.Getenv(envDuration))
	sources, _ := strconv.Atoi(os.Getenv(envSources))
	res, err := loadgen.Run(context.Background(), loadgen.Config{
		Target: netip.MustParseAddrPort(target), Datagrams: readCorpus(t),
		Rate: rate, Duration: d, Sources: sources,
	})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("SENT %d %d\n", res.Sent, res.Elapsed.Nanoseconds())
}

// counter is the benchmark's Handler: it counts records.
type counter struct{ n atomic.Int64 }

func (c *counter) HandleFlows(_ int, recs []flow.Record) { c.n.Add(int64(len(recs))) }

// gather sums a counter family of the collector's registry.
func gather(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// step is one rate of the search.
type step struct {
	rate, achieved        float64
	sent, received, drops int
	collectorCPU, elapsed time.Duration
}

// BenchmarkLoopback finds the highest datagram rate that the collector
// receives and decodes without loss on loopback: the load generator (a
// second process) replays softflowd NetFlow v9 datagrams at rising rates
// for CCFLOW_LOOPBACK_STEP (default 3s) each; a rate counts when every
// datagram sent was decoded and the kernel reported no socket drops. The
// search stops at the first rate that loses datagrams twice, or that the
// generator itself cannot reach. It runs once whatever -benchtime says.
func BenchmarkLoopback(b *testing.B) {
	if testing.Short() {
		b.Skip("loopback search takes about a minute")
	}
	dgrams := readCorpus(b)
	stepDur := 3 * time.Second
	if s := os.Getenv("CCFLOW_LOOPBACK_STEP"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		stepDur = d
	}
	cfg := collector.DefaultConfig()
	cfg.NetFlow.Addr, cfg.IPFIX.Addr, cfg.SFlow.Addr = "127.0.0.1:0", "", ""
	cfg.NetFlow.Sockets = runtime.GOMAXPROCS(0)
	cfg.NetFlow.ReceiveBuffer = 32 << 20
	reg := prometheus.NewRegistry()
	h := &counter{}
	c, err := collector.New(cfg, collector.Deps{Handler: h, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	target := c.Addrs()["netflow"]

	// Records per datagram, from one decode of the corpus.
	var recsPerDatagram float64
	{
		before := h.n.Load()
		res, err := loadgen.Run(context.Background(), loadgen.Config{Target: target, Datagrams: dgrams, Count: len(dgrams), Rate: 10000})
		if err != nil {
			b.Fatal(err)
		}
		waitQuiet(b, reg)
		recsPerDatagram = float64(h.n.Load()-before) / float64(res.Sent)
	}

	b.ResetTimer()
	best := 0.0
	var bestStep step
	for _, rate := range []float64{25e3, 50e3, 75e3, 100e3, 125e3, 150e3, 175e3, 200e3, 250e3, 300e3, 400e3} {
		var s step
		ok := false
		for try := 0; try < 2 && !ok; try++ {
			s = runStep(b, reg, target, rate, stepDur)
			ok = s.received == s.sent && s.drops == 0
			b.Logf("rate %6.0f/s: sent %8d (achieved %6.0f/s), decoded %8d, kernel drops %6d, collector CPU %.2fs = %.2f cores, %.2f CPU-s per million flows",
				rate, s.sent, s.achieved, s.received, s.drops, s.collectorCPU.Seconds(),
				s.collectorCPU.Seconds()/s.elapsed.Seconds(), s.collectorCPU.Seconds()/(float64(s.received)*recsPerDatagram/1e6))
		}
		if ok && s.achieved > best {
			best, bestStep = s.achieved, s
		}
		if s.achieved < 0.97*rate {
			b.Logf("the load generator reached only %.0f of %.0f datagrams/s: the machine, not the collector, limits this run", s.achieved, rate)
			break
		}
		if !ok {
			b.Logf("datagrams lost at %.0f/s (twice): the highest drop-free rate is %.0f/s", rate, best)
			break
		}
	}
	b.ReportMetric(best, "datagrams/s")
	b.ReportMetric(best*recsPerDatagram, "records/s")
	if bestStep.received > 0 {
		b.ReportMetric(bestStep.collectorCPU.Seconds()/(float64(bestStep.received)*recsPerDatagram/1e6), "cpu-s/Mflows")
	}
}

// runStep replays at one rate and measures what the collector received.
func runStep(b *testing.B, reg *prometheus.Registry, target netip.AddrPort, rate float64, d time.Duration) step {
	b.Helper()
	dgBefore := gather(b, reg, "ccflow_collector_datagrams_total")
	dropsBefore := gather(b, reg, "ccflow_collector_socket_drops_total")
	cpuBefore := cpuTime()
	start := time.Now()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadgenHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envTarget+"="+target.String(),
		envRate+"="+strconv.FormatFloat(rate, 'f', 0, 64),
		envDuration+"="+d.String(),
		envSources+"=8",
	)
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("load generator: %v\n%s", err, out)
	}
	var sent int
	var elapsed int64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "SENT ") {
			_, _ = fmt.Sscanf(sc.Text(), "SENT %d %d", &sent, &elapsed)
		}
	}
	if sent == 0 {
		b.Fatalf("load generator sent nothing:\n%s", out)
	}
	waitQuiet(b, reg)
	// A datagram that arrives after drops makes the kernel report them
	// (SO_RXQ_OVFL): send a few more, from several ports so that every
	// socket gets one, and do not count them.
	const probes = 8
	_, _ = loadgen.Run(context.Background(), loadgen.Config{Target: target, Datagrams: [][]byte{{0, 9}}, Count: probes, Sources: probes, Batch: 1})
	waitQuiet(b, reg)
	return step{
		rate:         rate,
		achieved:     float64(sent) / time.Duration(elapsed).Seconds(),
		sent:         sent,
		received:     int(gather(b, reg, "ccflow_collector_datagrams_total")-dgBefore) - probes,
		drops:        int(gather(b, reg, "ccflow_collector_socket_drops_total") - dropsBefore),
		collectorCPU: cpuTime() - cpuBefore,
		elapsed:      time.Since(start),
	}
}

// waitQuiet waits until the collector's datagram count stops moving.
func waitQuiet(b *testing.B, reg *prometheus.Registry) {
	b.Helper()
	last := -1.0
	for {
		time.Sleep(150 * time.Millisecond)
		n := gather(b, reg, "ccflow_collector_datagrams_total")
		if n == last {
			return
		}
		last = n
	}
}
