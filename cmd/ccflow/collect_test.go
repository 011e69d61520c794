package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccflow/ccflow/collector/pcap"
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

// TestCollectCommand runs `ccflow collect`, sends it softflowd's NetFlow v5
// datagrams and reads the result from its metrics; neither the logs nor
// the metrics may contain a flow address.
func TestCollectCommand(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "collector", "testdata", "netflow5.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	dgrams, err := pcap.ReadDatagrams(f)
	f.Close()
	if err != nil || len(dgrams) == 0 {
		t.Fatalf("corpus: %d datagrams, %v", len(dgrams), err)
	}
	nfAddr, metricsAddr := freePort(t, "udp"), freePort(t, "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"collect", "--netflow-addr", nfAddr, "--ipfix-addr", "", "--sflow-addr", "", "--metrics-addr", metricsAddr, "--log-level", "debug"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get("http://" + metricsAddr + "/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready; output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := net.Dial("udp", nfAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dgrams {
		if _, err := conn.Write(d.Payload); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	want := `ccflow_collector_flows_total{exporter="127.0.0.1",protocol="netflow5"} 594`
	var metrics string
	for time.Now().Before(deadline) {
		if _, metrics = get("http://" + metricsAddr + "/metrics"); strings.Contains(metrics, want) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(metrics, want) {
		t.Fatalf("metrics lack %s:\n%s", want, metrics)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("collect: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("collect did not stop on cancel")
	}
	if !strings.Contains(out.String(), "flows=594") {
		t.Errorf("no final count in the output:\n%s", out.String())
	}
	// The capture's hosts are 147.32.80.0/24; no form of them may appear.
	for _, s := range []string{"147.32.", "932050", "147 32 "} {
		if strings.Contains(out.String(), s) || strings.Contains(metrics, s) {
			t.Errorf("a flow address (%q) reached the logs or metrics", s)
		}
	}
}

func TestCollectCommandPortInUse(t *testing.T) {
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"collect", "--ipfix-addr", busy.LocalAddr().String(), "--netflow-addr", "", "--sflow-addr", "", "--metrics-addr", ""})
	err = cmd.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "collector.ipfix.addr") {
		t.Fatalf("collect = %v, want an error naming collector.ipfix.addr", err)
	}
}
