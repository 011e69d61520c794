package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSimulateCommand runs `ccflow simulate` against two local UDP
// listeners and checks the truth and benign files and the traffic.
func TestSimulateCommand(t *testing.T) {
	listen := func() (*net.UDPConn, chan int) {
		ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		_ = ln.SetReadBuffer(8 << 20)
		n := make(chan int, 1)
		go func() {
			buf := make([]byte, 65536)
			c := 0
			for {
				_ = ln.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := ln.Read(buf); err != nil {
					n <- c
					return
				}
				c++
			}
		}()
		return ln, n
	}
	nf, nfN := listen()
	sf, sfN := listen()
	dir := t.TempDir()
	truth, benign, pcap := filepath.Join(dir, "truth.csv"), filepath.Join(dir, "benign.csv"), filepath.Join(dir, "out.pcap")
	summary := filepath.Join(dir, "summary.json")
	var stderr bytes.Buffer
	cmd := newRootCmd()
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"simulate",
		"--netflow-addr", nf.LocalAddr().String(), "--sflow-addr", sf.LocalAddr().String(),
		"--truth", truth, "--benign", benign, "--pcap", pcap, "--truth-subscribers=false", "--summary", summary,
		"--speed", "0", "--duration", "5m", "--start", "2026-01-02T03:04:05Z", "--sampling", "32",
		"--subscribers", "300", "--botnets", "2", "--infected-per-botnet", "4", "--beacon-period", "2m",
	})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("simulate: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "simulate: done: event 2026-01-02T03:09:05Z") {
		t.Errorf("no summary on stderr:\n%s", stderr.String())
	}
	var sum simSummary
	if b, err := os.ReadFile(summary); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.EventSeconds != 300 || sum.Sampling != 32 || sum.Flows == 0 {
		t.Errorf("summary %+v", sum)
	}
	n1, n2 := <-nfN, <-sfN
	if n1 == 0 || n2 == 0 || uint64(n1+n2) != sum.Datagrams {
		t.Errorf("received %d NetFlow and %d sFlow datagrams, %d sent", n1, n2, sum.Datagrams)
	}
	rows := readCSV(t, truth)
	if strings.Join(rows[0], ",") != "dataset,infected_src,c2_dst,dport,proto,note" || len(rows) != 1+2*4 {
		t.Fatalf("truth: %v", rows)
	}
	for _, r := range rows[1:] {
		if r[1] != "" || r[2] == "" || !strings.Contains(r[5], "period 2m0s") {
			t.Errorf("truth row %v", r)
		}
	}
	if rows := readCSV(t, benign); len(rows) < 2 || rows[0][1] != "kind" {
		t.Errorf("benign: %v", rows)
	}
	if st, err := os.Stat(pcap); err != nil || st.Size() < 1000 {
		t.Errorf("pcap: %v", err)
	}
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestSimulateCommandErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--duration", "1s"}, "no target"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--subscriber-prefixes", "8.8.8.0/22"}, "not in private, shared or documentation space"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--start", "yesterday"}, "--start"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--beacon-period", "10m-1m"}, "beacon period"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--botnet-services", "icmp/1"}, "--botnet-services"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--datagram-rate", "10", "--flow-rate", "10"}, "not both"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--sflow-header", "fddi"}, "--sflow-header"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--max-datagram", "100"}, "max datagram"},
		{[]string{"--netflow-addr", "127.0.0.1:9", "--subscriber-prefixes", "10.0.0.0/8", "--ipv6-share", "0.5"}, "ipv6 share"},
	} {
		cmd := newRootCmd()
		var stderr bytes.Buffer
		cmd.SetErr(&stderr)
		cmd.SetOut(&stderr)
		cmd.SetArgs(append([]string{"simulate", "--progress", "0"}, c.args...))
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.args, err, c.want)
		}
	}
	// IPv4-only prefixes without --ipv6-share simply mean no IPv6.
	cmd := newRootCmd()
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"simulate", "--netflow-addr", "127.0.0.1:9", "--subscriber-prefixes", "10.0.0.0/8", "--speed", "0", "--duration", "10s"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Errorf("IPv4-only prefixes: %v", err)
	}
}

func TestParseSimStart(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now":                  now,
		"-4h":                  now.Add(-4 * time.Hour),
		"+30m":                 now.Add(30 * time.Minute),
		"2026-01-02T03:04:05Z": time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	} {
		got, err := parseSimStart(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
}
