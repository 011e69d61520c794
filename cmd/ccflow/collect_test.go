package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/ccflow/ccflow/collector/pcap"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/parquet"
	"github.com/ccflow/ccflow/testenv"
)

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T, network string) string {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
}

// syncBuffer is a goroutine-safe bytes.Buffer for a command's output.
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

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startCommand runs a ccflow subcommand in the background until the
// returned stop function cancels it; stop returns the command's error.
func startCommand(t *testing.T, out io.Writer, args ...string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newRootCmd()
	cmd.SetOut(out)
	cmd.SetErr(out)
	cmd.SetArgs(args)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(90 * time.Second):
				err = fmt.Errorf("%s did not stop within 90 s", args[0])
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitReady waits for /readyz on metricsAddr.
func waitReady(t *testing.T, metricsAddr string, out fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := get("http://" + metricsAddr + "/readyz"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMetric waits until the metrics page on metricsAddr contains line.
func waitMetric(t *testing.T, metricsAddr, line string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	var metrics string
	for time.Now().Before(deadline) {
		if _, metrics = get("http://" + metricsAddr + "/metrics"); strings.Contains(metrics, line) {
			return metrics
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("metrics lack %s:\n%s", line, metrics)
	return ""
}

func corpus(t *testing.T, name string) []pcap.Datagram {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "collector", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dgrams, err := pcap.ReadDatagrams(f)
	if err != nil || len(dgrams) == 0 {
		t.Fatalf("corpus %s: %d datagrams, %v", name, len(dgrams), err)
	}
	return dgrams
}

func sendDatagrams(t *testing.T, addr string, dgrams []pcap.Datagram) {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, d := range dgrams {
		if _, err := conn.Write(d.Payload); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond) // a router's pace, not a flood
	}
}

// TestCollectDetectOverKafka is the split deployment on a real broker:
// `ccflow collect` receives softflowd's NetFlow v5 export of the Slips
// capture, pseudonymizes the subscriber (147.32.0.0/16) and publishes to
// Kafka; `ccflow detect` consumes, checkpoints and writes the Parquet flows
// table. Flow count and byte sum match what softflowd exported (594 flows,
// 1,834,892 bytes, as tshark counts in the collector's own test), and no
// form of the subscriber addresses reaches the logs or metrics.
func TestCollectDetectOverKafka(t *testing.T) {
	kafkaAddr := testenv.Service(t, "CCFLOW_TEST_KAFKA")
	dgrams := corpus(t, "netflow5.pcap")
	dir := t.TempDir()
	topic := fmt.Sprintf("ccflow-split-%d", time.Now().UnixNano())
	t.Setenv("CCFLOW_BUS_KAFKA_BROKERS", kafkaAddr)
	t.Setenv("CCFLOW_BUS_KAFKA_TOPIC", topic)
	t.Setenv("CCFLOW_BUS_KAFKA_GROUP", topic)
	t.Setenv("CCFLOW_BUS_KAFKA_SPOOL_DIR", filepath.Join(dir, "spool"))

	nfAddr, collMetrics, detMetrics := freePort(t, "udp"), freePort(t, "tcp"), freePort(t, "tcp")
	var detOut, collOut syncBuffer
	stopDetect := startCommand(t, &detOut, "detect", "--metrics-addr", detMetrics,
		"--parquet-dir", filepath.Join(dir, "data"), "--state-dir", filepath.Join(dir, "state"),
		"--candidates", filepath.Join(dir, "candidates.jsonl"))
	waitReady(t, detMetrics, &detOut)
	stopCollect := startCommand(t, &collOut, "collect", "--netflow-addr", nfAddr, "--ipfix-addr", "", "--sflow-addr", "",
		"--metrics-addr", collMetrics, "--subscribers", "147.32.0.0/16", "--keys", filepath.Join(dir, "keys"), "--log-level", "debug")
	waitReady(t, collMetrics, &collOut)

	sendDatagrams(t, nfAddr, dgrams)
	collM := waitMetric(t, collMetrics, `ccflow_collector_flows_total{exporter="127.0.0.1",protocol="netflow5"} 594`, 20*time.Second)
	waitMetric(t, collMetrics, "ccflow_ingest_flows_total 594", 20*time.Second)
	if err := stopCollect(); err != nil {
		t.Fatalf("collect: %v\n%s", err, collOut.String())
	}
	detM := waitMetric(t, detMetrics, "ccflow_analysis_flows_total 594", 60*time.Second)
	if err := stopDetect(); err != nil {
		t.Fatalf("detect: %v\n%s", err, detOut.String())
	}

	var flows int
	var bytes uint64
	err := parquet.ReadFlows(context.Background(), filepath.Join(dir, "data"), func(b flow.Batch) error {
		for _, f := range b.Flows {
			flows++
			bytes += f.Bytes
			if f.Kind != flow.KindSubscriber || f.Sub.IsZero() || f.Epoch == 0 {
				t.Errorf("flow not pseudonymized: kind %v, epoch %d", f.Kind, f.Epoch)
				return nil
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if flows != 594 || bytes != 1834892 {
		t.Errorf("Parquet flows table: %d flows, %d bytes; want 594 and 1834892", flows, bytes)
	}
	lintMetrics(t, "collect", collM)
	lintMetrics(t, "detect", detM)
	// The capture's hosts are 147.32.80.0/24; no form of them may appear.
	for _, s := range []string{"147.32.", "932050", "147 32 "} {
		for name, text := range map[string]string{"collect output": collOut.String(), "detect output": detOut.String(), "collect metrics": collM, "detect metrics": detM} {
			if strings.Contains(text, s) {
				t.Errorf("a subscriber address form (%q) reached the %s", s, name)
			}
		}
	}
}

// lintMetrics checks a metrics page against the Prometheus conventions
// (promlint, as `promtool check metrics`): units in names, _total on
// counters, help text. Every ccflow metric must also carry the ccflow_
// prefix.
func lintMetrics(t *testing.T, name, page string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(page)).Lint()
	if err != nil {
		t.Fatalf("%s metrics do not parse: %v", name, err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "ccflow_") {
			t.Errorf("%s metric %s: %s", name, p.Metric, p.Text)
		}
	}
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "# HELP ") {
			m := strings.Fields(line)[2]
			if !strings.HasPrefix(m, "ccflow_") && !strings.HasPrefix(m, "go_") && !strings.HasPrefix(m, "promhttp_") {
				t.Errorf("%s metric %s lacks the ccflow_ prefix", name, m)
			}
		}
	}
}

// TestPortInUse: a listener whose port is taken fails the start with an
// error naming the key and where it was set.
func TestPortInUse(t *testing.T) {
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"run", "--ipfix-addr", busy.LocalAddr().String(), "--netflow-addr", "", "--sflow-addr", "", "--metrics-addr", "",
		"--subscribers", "192.0.2.0/24", "--keys", filepath.Join(dir, "keys"), "--parquet-dir", filepath.Join(dir, "data"), "--state-dir", filepath.Join(dir, "state"),
		"--candidates", filepath.Join(dir, "candidates.jsonl")})
	err = cmd.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "flag --ipfix-addr: collector.ipfix.addr") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("run = %v, want an error naming flag --ipfix-addr, collector.ipfix.addr and the cause", err)
	}
}
