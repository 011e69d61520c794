package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ccflow/ccflow/bench/loadgen"
	"github.com/ccflow/ccflow/collector/pcap"
)

// goflow2Module is the pinned goflow2 release.
const (
	goflow2Module  = "github.com/netsampler/goflow2/v2"
	goflow2Version = "v2.2.6"
	goflow2Pkg     = goflow2Module + "/cmd/goflow2@" + goflow2Version
)

// subscriberPrefixes are the simulator's default subscriber prefixes, given
// to ccflow's privacy stage.
var subscriberPrefixes = []string{"100.64.0.0/10", "2001:db8::/32"}

type options struct {
	out         string
	step        time.Duration
	start, top  float64
	bisect      int
	kafka       string
	goflow2     string
	subscribers int
	event       time.Duration
	sources     int
}

func main() {
	var o options
	var recv, recvMetrics, recvKeys string
	var recvBuf int
	flag.StringVar(&o.out, "out", "", "write the Markdown report to `FILE` (default: stdout only)")
	flag.DurationVar(&o.step, "step", 2500*time.Millisecond, "wall time of one rate step")
	flag.Float64Var(&o.start, "start-rate", 2500, "first rate of the search in datagrams/s (doubled until a step fails)")
	flag.Float64Var(&o.top, "max-rate", 400000, "highest rate tried")
	flag.IntVar(&o.bisect, "bisect", 2, "bisection steps between the last drop-free and the first failing rate")
	flag.StringVar(&o.kafka, "kafka", "", "Kafka broker `HOST:PORT` for the Kafka rows; empty starts one (scripts/kafka.sh, private state dir); none skips them")
	flag.StringVar(&o.goflow2, "goflow2", "bin/tools/goflow2", "goflow2 binary; installed there with go install "+goflow2Pkg+" when missing or another version")
	flag.IntVar(&o.subscribers, "subscribers", 20000, "simulated subscribers of the recorded load")
	flag.DurationVar(&o.event, "event", 5*time.Minute, "event time of the recorded load")
	flag.IntVar(&o.sources, "sources", 1, "source ports of the load generator (goflow2 keeps NetFlow templates per source port, ccflow per source address)")
	flag.StringVar(&recv, "receiver", "", "internal: run the collector-only receiver on UDP `HOST:PORT`")
	flag.StringVar(&recvMetrics, "receiver-metrics", "", "internal: the receiver's metrics address")
	flag.StringVar(&recvKeys, "receiver-keys", "", "internal: the receiver's key directory")
	flag.IntVar(&recvBuf, "receiver-rcvbuf", -1, "internal: the receiver's socket receive buffer (-1: ccflow's default, 0: the kernel's)")
	flag.Parse()
	if recv != "" {
		if err := runReceiver(recv, recvMetrics, recvKeys, recvBuf, subscriberPrefixes); err != nil {
			fmt.Fprintln(os.Stderr, "compare receiver:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-compare: "+format+"\n", args...)
}

// repoRoot finds the directory holding go.mod, from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found: run from the repository")
		}
		dir = parent
	}
}

func command(dir string, env []string, name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), env...)
	return c
}

func runCmd(c *exec.Cmd) error {
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(c.Args, " "), err, out)
	}
	return nil
}

// freePort returns a port that was free for network ("udp" or "tcp") on
// 127.0.0.1 a moment ago.
func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ensureGoflow2 installs the pinned goflow2 when path is missing or holds
// another version.
func ensureGoflow2(root, path string) (string, error) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	if out, err := exec.Command("go", "version", "-m", path).Output(); err == nil &&
		strings.Contains(string(out), goflow2Module+"\t"+goflow2Version) {
		return path, nil
	}
	logf("installing %s into %s", goflow2Pkg, filepath.Dir(path))
	c := command(root, []string{"GOBIN=" + filepath.Dir(path)}, "go", "install", goflow2Pkg)
	if err := runCmd(c); err != nil {
		return "", err
	}
	if filepath.Base(path) != "goflow2" {
		return "", fmt.Errorf("go install wrote %s, not %s", filepath.Join(filepath.Dir(path), "goflow2"), path)
	}
	return path, nil
}

// load is the recorded NetFlow v9 load.
type load struct {
	datagrams [][]byte
	flows     int // data records in datagrams
	subs      int
	event     time.Duration
	simArgs   string
}

// recordLoad runs the simulator once, as fast as it can, to a UDP socket
// that nobody reads, recording every datagram (--pcap).
func recordLoad(bin, work string, subs int, event time.Duration) (load, error) {
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return load{}, err
	}
	defer sink.Close()
	file, sum := filepath.Join(work, "load.pcap"), filepath.Join(work, "load.json")
	args := []string{"simulate", "--netflow-addr", sink.LocalAddr().String(), "--pcap", file, "--summary", sum,
		"--speed", "0", "--subscribers", strconv.Itoa(subs), "--duration", event.String(),
		"--start=-" + (event + 5*time.Minute).String(), "--progress", "0"}
	if err := runCmd(command(work, nil, bin, args...)); err != nil {
		return load{}, err
	}
	var s struct{ Datagrams, Flows int }
	b, err := os.ReadFile(sum)
	if err != nil {
		return load{}, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return load{}, err
	}
	f, err := os.Open(file)
	if err != nil {
		return load{}, err
	}
	defer f.Close()
	ds, err := pcap.ReadDatagrams(f)
	if err != nil {
		return load{}, err
	}
	if len(ds) != s.Datagrams {
		return load{}, fmt.Errorf("the pcap holds %d datagrams, the simulator sent %d", len(ds), s.Datagrams)
	}
	l := load{flows: s.Flows, subs: subs, event: event,
		simArgs: fmt.Sprintf("ccflow simulate --netflow-addr ... --pcap load.pcap --speed 0 --subscribers %d --duration %s", subs, event)}
	for _, d := range ds {
		l.datagrams = append(l.datagrams, d.Payload)
	}
	return l, nil
}

// startKafka starts a private broker with scripts/kafka.sh and returns its
// address and a function that stops it and deletes its data.
func startKafka(root, work string) (string, func(), error) {
	env := []string{"KAFKA_STATE_DIR=" + filepath.Join(work, "kafka")}
	out, err := command(root, env, filepath.Join(root, "scripts", "kafka.sh"), "up").Output()
	if err != nil {
		return "", nil, fmt.Errorf("scripts/kafka.sh up: %w", err)
	}
	s := strings.TrimSpace(string(out))
	_, addr, ok := strings.Cut(s[strings.LastIndexByte(s, '\n')+1:], "KAFKA_ADDR=")
	if !ok {
		return "", nil, fmt.Errorf("scripts/kafka.sh up printed no KAFKA_ADDR:\n%s", out)
	}
	stop := func() {
		_ = command(root, env, filepath.Join(root, "scripts", "kafka.sh"), "down").Run()
	}
	return addr, stop, nil
}

// kafkaPID returns the pid of the broker started in work, or 0.
func kafkaPID(work string) int {
	b, err := os.ReadFile(filepath.Join(work, "kafka", "broker.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// createTopic creates topic with partitions on broker (for goflow2, which
// does not create topics).
func createTopic(broker, topic string, partitions int) error {
	c := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

func run(o options) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "ccflow-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	began := time.Now()
	env := describeMachine(root)

	ccflow := filepath.Join(work, "ccflow")
	logf("building ccflow")
	if err := runCmd(command(root, nil, "go", "build", "-o", ccflow, "./cmd/ccflow")); err != nil {
		return err
	}
	gf, err := ensureGoflow2(root, o.goflow2)
	if err != nil {
		return err
	}
	keys := filepath.Join(work, "keys")
	if err := runCmd(command(work, nil, ccflow, "keygen", "--dir", keys, "--from", time.Now().UTC().Add(-24*time.Hour).Format("2006-01-02"))); err != nil {
		return err
	}
	logf("recording the load: %d subscribers, %s of event time", o.subscribers, o.event)
	ld, err := recordLoad(ccflow, work, o.subscribers, o.event)
	if err != nil {
		return err
	}
	logf("load: %d datagrams, %d flows (%.1f per datagram)", len(ld.datagrams), ld.flows, float64(ld.flows)/float64(len(ld.datagrams)))

	recvs := []*receiver{goflow2File(gf), collectorOnly(keys, -1), collectorOnly(keys, 0)}
	var brokerPID int
	switch o.kafka {
	case "none":
	default:
		broker := o.kafka
		if broker == "" {
			logf("starting a Kafka broker (scripts/kafka.sh, state in %s)", filepath.Join(work, "kafka"))
			addr, stop, err := startKafka(root, work)
			if err != nil {
				return err
			}
			defer stop()
			broker = addr
			brokerPID = kafkaPID(work)
		}
		topic := fmt.Sprintf("goflow2-compare-%d", time.Now().Unix())
		if err := createTopic(broker, topic, 8); err != nil {
			return err
		}
		recvs = append(recvs, ccflowCollect(ccflow, keys, broker, fmt.Sprintf("ccflow-compare-%d", time.Now().Unix())), goflow2Kafka(gf, broker, topic))
	}

	for _, r := range recvs {
		if r.kafka {
			r.brokerPID = brokerPID
		}
		if err := measure(r, o, ld, work); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	report := render(o, env, ld, recvs, time.Since(began))
	fmt.Print(report)
	if o.out != "" {
		out := o.out
		if !filepath.IsAbs(out) {
			out = filepath.Join(root, out)
		}
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			return err
		}
		logf("wrote %s (%s)", o.out, time.Since(began).Round(time.Second))
	}
	return nil
}

// receiver is one collector under test.
type receiver struct {
	name string // table row
	does string // what it does per flow
	// start returns the command that listens for NetFlow on port and
	// serves metrics on mport.
	start func(work string, port, mport int) *exec.Cmd
	// ready is the metrics server path that answers 200 once listening.
	ready string
	// datagrams, flows and drops read the receiver's own counters:
	// datagrams processed, flow records decoded, datagrams it dropped.
	datagrams, flows, drops func(metrics) float64
	kafka                   bool
	brokerPID               int

	steps []stepResult
	best  *stepResult
	stop  string // why the search stopped
	rss   int64
	info  string // settings worth reporting (receive buffer, ...)
}

func goflow2Args(port, mport int) []string {
	return []string{"-listen", fmt.Sprintf("netflow://127.0.0.1:%d", port), "-addr", fmt.Sprintf("127.0.0.1:%d", mport),
		"-format", "bin", "-loglevel", "warn"}
}

func goflow2Counters(r *receiver) *receiver {
	r.ready = "/metrics"
	r.datagrams = func(m metrics) float64 {
		return m.sum("goflow2_flow_process_nf_total", `version="9"`) + m.sum("goflow2_flow_process_nf_errors_total")
	}
	r.flows = func(m metrics) float64 {
		return m.sum("goflow2_flow_process_nf_flowset_records_total", `type="DataFlowSet"`)
	}
	r.drops = func(m metrics) float64 { return m.sum("goflow2_flow_dropped_packets_total") }
	return r
}

func goflow2File(bin string) *receiver {
	return goflow2Counters(&receiver{
		name: "goflow2 " + goflow2Version + " → file (/dev/null)",
		does: "decode, protobuf producer (-format bin), write to /dev/null",
		start: func(work string, port, mport int) *exec.Cmd {
			return command(work, nil, bin, append(goflow2Args(port, mport), "-transport", "file", "-transport.file", "/dev/null")...)
		},
	})
}

func goflow2Kafka(bin, broker, topic string) *receiver {
	return goflow2Counters(&receiver{
		name:  "goflow2 " + goflow2Version + " → Kafka",
		does:  "decode, protobuf producer (-format bin), produce to Kafka (sarama, 8 partitions, no compression)",
		kafka: true,
		start: func(work string, port, mport int) *exec.Cmd {
			return command(work, nil, bin, append(goflow2Args(port, mport), "-transport", "kafka",
				"-transport.kafka.brokers", broker, "-transport.kafka.topic", topic)...)
		},
	})
}

func ccflowCounters(r *receiver) *receiver {
	r.ready = "/readyz"
	r.datagrams = func(m metrics) float64 { return m.sum("ccflow_collector_datagrams_total") }
	r.flows = func(m metrics) float64 { return m.sum("ccflow_collector_flows_total") }
	r.drops = func(m metrics) float64 {
		return m.sum("ccflow_bus_dropped_flows_total") + m.sum("ccflow_ingest_output_errors_total")
	}
	return r
}

// collectorOnly is ccflow's collector side without a bus, with its default
// receive buffer (rcvbuf < 0) or rcvbuf bytes (0: the kernel's default, as
// goflow2 gets).
func collectorOnly(keys string, rcvbuf int) *receiver {
	name := "ccflow collector stages, no bus"
	if rcvbuf >= 0 {
		name += ", kernel-default receive buffer"
	}
	return ccflowCounters(&receiver{
		name: name,
		does: "decode, pseudonymize (AES-128), batch, Arrow IPC + zstd encode, discard (`ccflow collect` minus Kafka, in bench/compare)",
		start: func(work string, port, mport int) *exec.Cmd {
			self, _ := os.Executable()
			return command(work, nil, self, "-receiver", fmt.Sprintf("127.0.0.1:%d", port),
				"-receiver-metrics", fmt.Sprintf("127.0.0.1:%d", mport), "-receiver-keys", keys,
				"-receiver-rcvbuf", strconv.Itoa(rcvbuf))
		},
	})
}

func ccflowCollect(bin, keys, broker, topic string) *receiver {
	return ccflowCounters(&receiver{
		name:  "`ccflow collect` → Kafka",
		does:  "decode, pseudonymize (AES-128), batch, Arrow IPC + zstd encode, produce to Kafka (kafka-go, 8 partitions keyed by remote endpoint)",
		kafka: true,
		start: func(work string, port, mport int) *exec.Cmd {
			return command(work, []string{"CCFLOW_BUS_KAFKA_SPOOL_DIR=" + filepath.Join(work, "spool")}, bin, "collect",
				"--netflow-addr", fmt.Sprintf("127.0.0.1:%d", port), "--ipfix-addr", "", "--sflow-addr", "",
				"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport), "--kafka-brokers", broker, "--topic", topic,
				"--subscribers", strings.Join(subscriberPrefixes, ","), "--keys", keys, "--log-level", "warn")
		},
	})
}

// stepResult is one rate of the search.
type stepResult struct {
	rate, achieved float64
	sent           int
	processed      int     // datagrams the receiver processed (its counter)
	atEnd          int     // ... of them by the time the sender finished
	flows          float64 // flow records it decoded
	kernelDrops    uint64
	ownDrops       float64
	cpu            time.Duration
	brokerCPU      time.Duration
	ok             bool
}

func (s stepResult) String() string {
	verdict := "drop-free"
	if !s.ok {
		verdict = "LOSS/LAG"
	}
	return fmt.Sprintf("%7.0f/s asked, %7.0f/s sent (%d): processed %d (%d at the end of sending), kernel drops %d, own drops %.0f, %.0f flows, CPU %.2fs = %.2f CPU-s/Mflows: %s",
		s.rate, s.achieved, s.sent, s.processed, s.atEnd, s.kernelDrops, s.ownDrops, s.flows, s.cpu.Seconds(), s.cpuPerMflows(), verdict)
}

func (s stepResult) cpuPerMflows() float64 {
	if s.flows <= 0 {
		return 0
	}
	return s.cpu.Seconds() / (s.flows / 1e6)
}

func (s stepResult) brokerPerMflows() float64 {
	if s.flows <= 0 {
		return 0
	}
	return s.brokerCPU.Seconds() / (s.flows / 1e6)
}

// measure starts r, warms it up and searches its highest drop-free rate.
func measure(r *receiver, o options, ld load, work string) error {
	port, err := freePort("udp")
	if err != nil {
		return err
	}
	mport, err := freePort("tcp")
	if err != nil {
		return err
	}
	cmd := r.start(work, port, mport)
	logPath := filepath.Join(work, fmt.Sprintf("receiver-%d.log", port))
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	logf("%s: starting (udp %d, metrics %d)", r.name, port, mport)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	murl := fmt.Sprintf("http://127.0.0.1:%d", mport)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := httpClient.Get(murl + r.ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("exited at start: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("not ready after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	pid := cmd.Process.Pid

	// Warm-up: templates, the epoch key, Kafka connections and topics.
	if _, err := loadgen.Run(context.Background(), loadgen.Config{Target: target, Datagrams: ld.datagrams, Count: 2000, Rate: 2000, Sources: o.sources}); err != nil {
		return err
	}
	if _, err := waitQuiet(murl, r, pid, 10*time.Second); err != nil {
		return err
	}
	if m, err := scrape(murl + "/metrics"); err == nil {
		if b := m.sum("ccflow_collector_receive_buffer_bytes"); b > 0 {
			r.info = fmt.Sprintf("ccflow_collector_receive_buffer_bytes %s", byteSize(int64(b)))
		}
	}
	if r.info == "" {
		r.info = "receive buffer: the kernel's default; 1 socket, 2 decode workers, a non-blocking queue of up to 1M datagrams (its defaults)"
	}

	// The generator is "short" when it could not reach 90% of the rate
	// asked: other processes had the CPUs. A short step is repeated (up to
	// three times), a failing one once.
	short := func(s stepResult) bool { return s.achieved < 0.9*s.rate }
	try := func(rate float64) (stepResult, error) {
		var s stepResult
		fails, shorts := 0, 0
		for {
			var err error
			s, err = step(r, o, ld, target, murl, pid, port, rate)
			if err != nil {
				return s, err
			}
			r.steps = append(r.steps, s)
			logf("%s: %s", r.name, s)
			switch {
			case short(s):
				shorts++
				if shorts < 3 {
					continue
				}
			case !s.ok:
				fails++
				if fails < 2 {
					continue
				}
			}
			return s, nil
		}
	}
	var good, bad float64
	for rate := o.start; rate <= o.top; rate *= 2 {
		s, err := try(rate)
		if err != nil {
			return err
		}
		if s.ok {
			good = rate
		}
		if short(s) {
			r.stop = fmt.Sprintf("the load generator reached only %.0f of %.0f datagrams/s (the machine's limit, not the receiver's)", s.achieved, rate)
			break
		}
		if !s.ok {
			bad = rate
			r.stop = fmt.Sprintf("lost or fell behind at %.0f datagrams/s (twice)", rate)
			break
		}
	}
	if r.stop == "" {
		r.stop = fmt.Sprintf("passed the highest rate tried (%.0f/s)", o.top)
	}
	for i := 0; bad > 0 && i < o.bisect && bad-good > 0.1*max(good, o.start/4); i++ {
		mid := (good + bad) / 2
		s, err := try(mid)
		if err != nil {
			return err
		}
		if s.ok {
			good = mid
		} else {
			bad = mid
			r.stop = fmt.Sprintf("lost or fell behind at %.0f datagrams/s (twice)", mid)
		}
	}
	for i := range r.steps {
		s := &r.steps[i]
		if s.ok && (r.best == nil || s.achieved > r.best.achieved) {
			r.best = s
		}
	}
	r.rss = peakRSS(pid)
	return nil
}

// step sends at rate for o.step and measures.
func step(r *receiver, o options, ld load, target netip.AddrPort, murl string, pid, port int, rate float64) (stepResult, error) {
	s := stepResult{rate: rate}
	m0, err := scrape(murl + "/metrics")
	if err != nil {
		return s, err
	}
	k0, err := udpDrops(port)
	if err != nil {
		return s, err
	}
	c0, err := cpuTime(pid)
	if err != nil {
		return s, err
	}
	var b0 time.Duration
	if r.brokerPID > 0 {
		b0, _ = cpuTime(r.brokerPID)
	}
	res, err := loadgen.Run(context.Background(), loadgen.Config{Target: target, Datagrams: ld.datagrams, Rate: rate, Duration: o.step, Sources: o.sources})
	if err != nil {
		return s, err
	}
	mEnd, err := scrape(murl + "/metrics")
	if err != nil {
		return s, err
	}
	m1, err := waitQuiet(murl, r, pid, 15*time.Second)
	if err != nil {
		return s, err
	}
	// A datagram that arrives after drops makes ccflow's SO_RXQ_OVFL count
	// them; /proc/net/udp counts them anyway.
	k1, err := udpDrops(port)
	if err != nil {
		return s, err
	}
	c1, err := cpuTime(pid)
	if err != nil {
		return s, err
	}
	if r.brokerPID > 0 {
		b1, _ := cpuTime(r.brokerPID)
		s.brokerCPU = b1 - b0
	}
	s.achieved, s.sent = res.Rate(), res.Sent
	s.processed = int(r.datagrams(m1) - r.datagrams(m0))
	s.atEnd = int(r.datagrams(mEnd) - r.datagrams(m0))
	s.flows = r.flows(m1) - r.flows(m0)
	s.kernelDrops = k1 - k0
	s.ownDrops = r.drops(m1) - r.drops(m0)
	s.cpu = c1 - c0
	s.ok = s.kernelDrops == 0 && s.ownDrops == 0 && s.processed >= s.sent && float64(s.atEnd) >= 0.95*float64(s.sent)
	return s, nil
}

// waitQuiet waits until the receiver's datagram counter and its CPU time
// stop moving (everything queued processed), at most limit, and returns the
// last scrape.
func waitQuiet(murl string, r *receiver, pid int, limit time.Duration) (metrics, error) {
	deadline := time.Now().Add(limit)
	lastN, lastCPU := -1.0, time.Duration(-1)
	for {
		time.Sleep(250 * time.Millisecond)
		m, err := scrape(murl + "/metrics")
		if err != nil {
			return nil, err
		}
		cpu, err := cpuTime(pid)
		if err != nil {
			return nil, err
		}
		n := r.datagrams(m)
		// Idle: no new datagram and under 2% of a core in the last 250 ms
		// (timers and metrics scrapes only).
		if n == lastN && cpu-lastCPU <= 5*time.Millisecond {
			return m, nil
		}
		if time.Now().After(deadline) {
			return m, nil
		}
		lastN, lastCPU = n, cpu
	}
}

// machine describes where the run happened.
type machine struct {
	date, cpu, kernel, goVersion, commit, load string
	cores                                      int
}

func describeMachine(root string) machine {
	m := machine{date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), cores: runtime.NumCPU(), goVersion: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if out, err := command(root, nil, "git", "describe", "--always", "--dirty").Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
	}
	return m
}

// render writes the Markdown report.
func render(o options, env machine, ld load, rs []*receiver, took time.Duration) string {
	var b strings.Builder
	fpd := float64(ld.flows) / float64(len(ld.datagrams))
	fmt.Fprintf(&b, "# Side-by-side: ccflow's collector and goflow2\n\n")
	fmt.Fprintf(&b, "Generated by `make bench-compare` (bench/compare) on %s: %s, %d cores, Linux %s, %s, ccflow %s. Load average (1, 5, 15 min) at the start %s, at the end %s: the machine is shared with other engineers' builds and tests, so figures move between runs. The run took %s.\n\n",
		env.date, env.cpu, env.cores, env.kernel, env.goVersion, env.commit, env.load, loadAvg(), took.Round(time.Second))
	fmt.Fprintf(&b, "**Load.** NetFlow v9 from the traffic simulator (`%s`): %d datagrams, %d flows (%.1f per datagram), replayed in a loop by bench/loadgen from one source port on 127.0.0.1 (one router), %s per rate, doubling from %.0f datagrams/s, then up to %d bisection steps. Every receiver runs in its own process, with its default settings, and gets the same datagrams.\n\n",
		ld.simArgs, len(ld.datagrams), ld.flows, fpd, o.step, o.start, o.bisect)
	fmt.Fprintf(&b, "**Drop-free** means: no kernel drops on the receiver's socket (`/proc/net/udp`), none of its own (goflow2 `flow_dropped_packets_total`; ccflow bus drops), every datagram sent processed by its own counter (goflow2 `flow_process_nf_total` + `flow_process_nf_errors_total`, ccflow `ccflow_collector_datagrams_total`), and at least 95%% of them by the time the sender stopped (it kept up rather than queueing). A failing rate is retried once. **CPU** is utime+stime of the receiver's process (`/proc/PID/stat`) from the start of a step until it is idle again, per million flows it decoded.\n\n")

	fmt.Fprintf(&b, "| receiver | work per flow | highest drop-free rate, datagrams/s | flows/s | CPU-s per million flows at %.0f datagrams/s | CPU-s per million flows at its highest rate | peak RSS |\n", o.start)
	b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		rate, flows, atBest := "none", "–", "–"
		if r.best != nil {
			rate = fmt.Sprintf("%.0f", r.best.achieved)
			flows = fmt.Sprintf("%.2fM", r.best.achieved*fpd/1e6)
			atBest = cpuCell(r.best)
		}
		atStart := "–"
		if s := r.at(o.start); s != nil {
			atStart = cpuCell(s)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %.0f MiB |\n", r.name, r.does, rate, flows, atStart, atBest, float64(r.rss)/(1<<20))
	}
	b.WriteString("\nRatios (ccflow over goflow2):\n\n")
	for _, pair := range [][2]int{{1, 0}, {2, 0}, {3, 4}} {
		if pair[0] >= len(rs) || pair[1] >= len(rs) {
			continue
		}
		c, g := rs[pair[0]], rs[pair[1]]
		fmt.Fprintf(&b, "- %s / %s: %s\n", c.name, g.name, ratios(c, g, o.start))
	}
	b.WriteString("\nWhat ended each search, and settings:\n\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- %s: %s; %s.", r.name, r.stop, r.info)
		if r.kafka && r.best != nil && r.best.brokerCPU > 0 {
			fmt.Fprintf(&b, " The Kafka broker (same machine, not counted above) used %.2f CPU-s per million flows at that rate.", r.best.brokerPerMflows())
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "\nNotes:\n\n")
	fmt.Fprintf(&b, "- Receive buffers: ccflow asks for 8 MiB (`collector.netflow.receive_buffer`, with SO_RCVBUFFORCE, which needs CAP_NET_ADMIN; otherwise the kernel caps it at `net.core.rmem_max`, %s here). goflow2 has no such setting and gets `net.core.rmem_default` (%s here; the third row gives ccflow the same). goflow2's socket reader only copies datagrams into a user-space queue (up to a million) for its decode workers; ccflow decodes, pseudonymizes and batches in the goroutine that reads the socket, so every pause of that goroutine (a busy machine, a batch being encoded) has to fit in the socket buffer. With the kernel's default buffer (third row) ccflow loses datagrams at lower rates than its CPU cost allows; keep its default buffer, or raise `net.core.rmem_max` where it runs without CAP_NET_ADMIN.\n", sysctlBytes("rmem_max"), sysctlBytes("rmem_default"))
	b.WriteString("- The Kafka rows do different work per flow: ccflow pseudonymizes every subscriber address (AES-128), encodes Arrow IPC in zstd frames (the default `bus.kafka.compression`) and partitions by remote endpoint; goflow2 sends every flow as its own uncompressed protobuf message (sarama's asynchronous producer). The broker runs on the same 2 cores as the receiver and the load generator; its CPU is not in the receiver's column.\n")
	b.WriteString("- The collector-only rows are this harness run again as a receiver (`-receiver`): the same collector, privacy, ingest and batcher packages that `ccflow collect` wires, with a producer that encodes each batch as the Kafka producer does and drops it. They show the collector side's cost without a broker, the closest match to goflow2 writing to /dev/null.\n")
	b.WriteString("- On a busy machine the drop-free rates depend on how much CPU the receiver gets from the scheduler, and move by several times between runs (goflow2 → file reached 1,886 to 8,759 datagrams/s in runs of the same day); CPU seconds per million flows move much less and are the steadier comparison.\n")
	b.WriteString("- The load generator runs in the harness process on the same 2 cores; above about 150k datagrams/s it needs more than a core (docs/collector.md, Loopback). A step where it reached less than 90% of the rate asked is repeated up to three times and then ends the search.\n")
	b.WriteString("\nAll steps:\n\n```\n")
	for _, r := range rs {
		for _, s := range r.steps {
			fmt.Fprintf(&b, "%-64s %s\n", r.name, s)
		}
	}
	b.WriteString("```\n")
	return b.String()
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// sysctlBytes formats /proc/sys/net/core/NAME as KiB or MiB.
func sysctlBytes(name string) string {
	b, err := os.ReadFile("/proc/sys/net/core/" + name)
	if err != nil {
		return "?"
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return "?"
	}
	return byteSize(n)
}

func byteSize(n int64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
}

func cpuCell(s *stepResult) string {
	return fmt.Sprintf("%.2f", s.cpuPerMflows())
}

// at returns the last drop-free step of r at rate, else its last step at
// rate.
func (r *receiver) at(rate float64) *stepResult {
	var last *stepResult
	for i := range r.steps {
		if r.steps[i].rate == rate {
			if r.steps[i].ok {
				return &r.steps[i]
			}
			last = &r.steps[i]
		}
	}
	return last
}

func ratios(c, g *receiver, at float64) string {
	var parts []string
	if c.best != nil && g.best != nil {
		parts = append(parts, fmt.Sprintf("%.1fx the highest drop-free rate", c.best.achieved/g.best.achieved))
	}
	cs, gs := c.at(at), g.at(at)
	if cs != nil && gs != nil && cs.cpuPerMflows() > 0 {
		parts = append(parts, fmt.Sprintf("1/%.1f of the CPU per flow at %.0f datagrams/s (%.2f vs %.2f CPU-s per million flows)", gs.cpuPerMflows()/cs.cpuPerMflows(), at, cs.cpuPerMflows(), gs.cpuPerMflows()))
	}
	if len(parts) == 0 {
		return "no common drop-free rate"
	}
	return strings.Join(parts, ", ")
}
