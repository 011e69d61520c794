package collector

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccflow/ccflow/collector/pcap"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

// This file runs the real exporters of the test plan (softflowd for NetFlow
// v5/v9/IPFIX, pmacctd's sfprobe plugin for sFlow) and the independent
// decoder (tshark), for the corpus generator and the real-exporter tests.

// recorder receives an exporter's datagrams, keeps them (for a pcap that
// tshark reads) and optionally forwards each one, as received, to a
// collector.
type recorder struct {
	conn *net.UDPConn
	fwd  *net.UDPConn
	mu   sync.Mutex
	got  []pcap.Datagram
	last time.Time
	done chan struct{}
}

func startRecorder(t *testing.T, forward netip.AddrPort) *recorder {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(8 << 20)
	r := &recorder{conn: conn, done: make(chan struct{}), last: time.Now()}
	if forward.IsValid() {
		if r.fwd, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(forward)); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		defer close(r.done)
		buf := make([]byte, 65535)
		for {
			n, src, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r.fwd != nil {
				_, _ = r.fwd.Write(buf[:n])
			}
			r.mu.Lock()
			r.got = append(r.got, pcap.Datagram{Time: time.Now(), Src: src, Dst: r.addr(), Payload: append([]byte(nil), buf[:n]...)})
			r.last = time.Now()
			r.mu.Unlock()
		}
	}()
	t.Cleanup(r.close)
	return r
}

func (r *recorder) addr() netip.AddrPort { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (r *recorder) close() {
	_ = r.conn.Close()
	<-r.done
	if r.fwd != nil {
		_ = r.fwd.Close()
	}
}

// wait waits until no datagram arrived for idle, then stops receiving and
// returns the datagrams.
func (r *recorder) wait(idle time.Duration) []pcap.Datagram {
	for {
		r.mu.Lock()
		quiet := time.Since(r.last)
		r.mu.Unlock()
		if quiet >= idle {
			break
		}
		time.Sleep(idle - quiet)
	}
	r.close()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

// runTool runs an exporter to completion.
func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	runToolEnding(t, name, "", args...)
}

// runToolEnding is runTool for a tool whose exit status is unreliable after
// a normal end: a non-zero status is accepted when the output contains
// normalEnd. (pmacctd reading a savefile exits 1 now and then although its
// log shows the normal shutdown; what it exported is still checked against
// tshark by the caller.)
func runToolEnding(t *testing.T, name, normalEnd string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Tool(t, name), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && normalEnd != "" && ctx.Err() == nil && errors.As(err, &exit) && strings.Contains(out.String(), normalEnd) {
		t.Logf("%s exited with %v after its normal shutdown; accepted", name, err)
		return
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
}

// softflowdExport runs softflowd on a pcap with export version v (5, 9 or
// 10) into a recorder (forwarding to fwd when valid) and returns the
// datagrams it sent.
func softflowdExport(t *testing.T, pcapFile string, v int, fwd netip.AddrPort) []pcap.Datagram {
	t.Helper()
	testenv.Tool(t, "softflowd")
	r := startRecorder(t, fwd)
	// -d keeps softflowd in the foreground; it exports every flow at the
	// end of the file and exits (-c would make it wait for a control
	// connection).
	runTool(t, "softflowd", "-d", "-r", pcapFile, "-n", r.addr().String(), "-v", strconv.Itoa(v))
	return r.wait(time.Second)
}

// pmacctSFlowExport runs pmacctd with the sfprobe plugin (1:1 sampling) on
// a pcap and returns the sFlow datagrams it sent.
func pmacctSFlowExport(t *testing.T, pcapFile string, fwd netip.AddrPort) []pcap.Datagram {
	t.Helper()
	testenv.Tool(t, "pmacctd")
	r := startRecorder(t, fwd)
	conf := filepath.Join(t.TempDir(), "pmacctd.conf")
	body := fmt.Sprintf("daemonize: false\npcap_savefile: %s\nplugins: sfprobe\nsfprobe_receiver: %s\nsampling_rate: 1\n", pcapFile, r.addr())
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	runToolEnding(t, "pmacctd", "no more plugins active. Shutting down.", "-f", conf)
	return r.wait(time.Second)
}

// rawIPCapture writes a copy of an Ethernet capture with the link headers
// stripped (LINKTYPE_RAW) into a temporary file: pmacctd then exports
// sampled headers with header_protocol 11 (IPv4) instead of 1 (Ethernet).
func rawIPCapture(t *testing.T, src string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	rd, err := pcap.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "rawip.pcap")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	w, err := pcap.NewWriter(out, pcap.LinkRaw)
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ip := rd.IP(p); ip != nil {
			if err := w.WritePacket(p.Time, ip); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// writeCapture writes datagrams into a pcap file with the destination port
// set to the protocol's well-known port, so that tshark's heuristics pick
// the right dissector.
func writeCapture(t *testing.T, path string, dgrams []pcap.Datagram, port uint16) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := pcap.NewWriter(f, pcap.LinkRaw)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dgrams {
		dst := netip.AddrPortFrom(d.Dst.Addr(), port)
		if err := w.WriteUDP(d.Time, d.Src, dst, d.Payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// readCapture reads the datagrams of a pcap file.
func readCapture(t testing.TB, path string) []pcap.Datagram {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := pcap.ReadDatagrams(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// tuple is the part of a flow that both ccflow and tshark report.
type tuple struct {
	Src, Dst         string
	Proto            int
	SrcPort, DstPort int
	Packets, Bytes   uint64
}

func tupleOf(r *flow.Record) tuple {
	return tuple{
		Src: r.SrcAddr.Addr().String(), Dst: r.DstAddr.Addr().String(), Proto: int(r.Proto),
		SrcPort: int(r.SrcPort), DstPort: int(r.DstPort), Packets: r.Packets, Bytes: r.Bytes,
	}
}

func sortTuples(ts []tuple) {
	sort.Slice(ts, func(i, j int) bool { return fmt.Sprint(ts[i]) < fmt.Sprint(ts[j]) })
}

// tsharkNetFlow returns, per flow record, what tshark's cflow dissector
// found in a capture of NetFlow v5/v9 or IPFIX datagrams.
func tsharkNetFlow(t *testing.T, capture string) []tuple {
	t.Helper()
	fields := []string{"cflow.srcaddr", "cflow.dstaddr", "cflow.protocol", "cflow.srcport", "cflow.dstport", "cflow.packets", "cflow.octets"}
	args := []string{"-r", capture, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command(testenv.Tool(t, "tshark"), args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var ts []tuple
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		cols := strings.Split(line, "\t")
		if len(cols) != len(fields) || cols[0] == "" {
			continue
		}
		var vals [][]string
		for _, c := range cols {
			vals = append(vals, strings.Split(c, "|"))
		}
		for i := range vals[0] {
			for _, v := range vals {
				if len(v) != len(vals[0]) {
					t.Fatalf("tshark: records of one datagram lack some of %v", fields)
				}
			}
			ts = append(ts, tuple{
				Src: vals[0][i], Dst: vals[1][i], Proto: atoi(t, vals[2][i]),
				SrcPort: atoi(t, vals[3][i]), DstPort: atoi(t, vals[4][i]),
				Packets: uint64(atoi(t, vals[5][i])), Bytes: uint64(atoi(t, vals[6][i])),
			})
		}
	}
	return ts
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("tshark value %q: %v", s, err)
	}
	return n
}

// pdmlNode is a generic PDML element (tshark -T pdml).
type pdmlNode struct {
	XMLName  xml.Name
	Name     string     `xml:"name,attr"`
	Show     string     `xml:"show,attr"`
	Children []pdmlNode `xml:",any"`
}

// tsharkSFlow returns, per flow sample, what tshark's sFlow dissector (and
// the dissectors it hands the sampled headers to) found in a capture.
func tsharkSFlow(t *testing.T, capture string) []tuple {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "tshark"), "-r", capture, "-T", "pdml").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var doc struct {
		Packets []pdmlNode `xml:"packet"`
	}
	if err := xml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("tshark pdml: %v", err)
	}
	var ts []tuple
	// walk takes the first value of each field: an ICMP error quotes
	// another IP header, which must not overwrite the outer one.
	var walk func(n *pdmlNode, cur *tuple, seen map[string]bool)
	walk = func(n *pdmlNode, cur *tuple, seen map[string]bool) {
		key := n.Name
		switch key {
		case "ipv6.src":
			key = "ip.src"
		case "ipv6.dst":
			key = "ip.dst"
		case "ipv6.nxt":
			key = "ip.proto"
		case "udp.srcport", "udp.dstport":
			key = "tcp" + key[3:]
		case "icmpv6.type":
			key = "icmp.type"
		case "icmpv6.code":
			key = "icmp.code"
		}
		if !seen[key] {
			seen[key] = true
			switch key {
			case "sflow_245.header.frame_length":
				cur.Bytes = uint64(atoi(t, n.Show))
			case "ip.src":
				cur.Src = n.Show
			case "ip.dst":
				cur.Dst = n.Show
			case "ip.proto":
				cur.Proto = atoi(t, n.Show)
			case "tcp.srcport":
				cur.SrcPort = atoi(t, n.Show)
			case "tcp.dstport":
				cur.DstPort = atoi(t, n.Show)
			case "icmp.type":
				cur.DstPort += atoi(t, n.Show) << 8
			case "icmp.code":
				cur.DstPort += atoi(t, n.Show)
			}
		}
		for i := range n.Children {
			walk(&n.Children[i], cur, seen)
		}
	}
	for _, p := range doc.Packets {
		for i := range p.Children {
			if p.Children[i].Name != "sflow" {
				continue
			}
			var samples func(n *pdmlNode)
			samples = func(n *pdmlNode) {
				if strings.HasPrefix(n.Show, "Flow sample") || strings.HasPrefix(n.Show, "Expanded flow sample") {
					cur := tuple{Packets: 1}
					walk(n, &cur, map[string]bool{})
					ts = append(ts, cur)
					return
				}
				for i := range n.Children {
					samples(&n.Children[i])
				}
			}
			samples(&p.Children[i])
		}
	}
	return ts
}

// totals sums a list of tuples.
func totals(ts []tuple) (flows int, packets, bytes uint64) {
	for _, x := range ts {
		packets += x.Packets
		bytes += x.Bytes
	}
	return len(ts), packets, bytes
}

// collecting is a Handler that keeps copies of every record.
type collecting struct {
	mu   sync.Mutex
	recs []flow.Record
}

func (c *collecting) HandleFlows(_ int, recs []flow.Record) {
	c.mu.Lock()
	c.recs = append(c.recs, recs...)
	c.mu.Unlock()
}

func (c *collecting) records() []flow.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]flow.Record(nil), c.recs...)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}
