package archive

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

func readFile(t *testing.T, path string, f Format, opts Options) ([]flow.Record, []string, int) {
	t.Helper()
	r, err := Open(path, f, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	recs, labels, err := ReadAll(r, true)
	if err != nil {
		t.Fatal(err)
	}
	return recs, labels, r.Skipped()
}

func raw(s string) flow.RawAddr { return flow.RawAddr(netip.MustParseAddr(s).As16()) }

func TestBinetflowCTU13(t *testing.T) {
	recs, labels, skipped := readFile(t, testenv.Data(t, "ctu13-s11-rbot", "capture20110818-2.binetflow.gz"), FormatBinetflow, Options{})
	if got := len(recs) + skipped; got != 107251 {
		t.Errorf("records+skipped = %d, want 107251 rows", got)
	}
	if skipped != 57 {
		t.Errorf("skipped %d rows, want the 57 ARP, RARP and IPX rows", skipped)
	}
	// First data row of the file.
	want := flow.Record{
		TimeStartMs: time.Date(2011, 8, 18, 15, 40, 53, 826372000, time.UTC).UnixMilli(),
		SrcAddr:     raw("76.76.172.248"), DstAddr: raw("147.32.84.229"),
		SrcPort: 63577, DstPort: 13363, Proto: 6, Bytes: 184, Packets: 3,
		SamplingRate: 1, Protocol: flow.ProtocolFile,
	}
	want.TimeEndMs = want.TimeStartMs + 2983
	want.TimeReceivedMs = want.TimeEndMs
	if diff := cmp.Diff(recs[0], want); diff != "" {
		t.Errorf("first record (-got +want):\n%s", diff)
	}
	if labels[0] != "flow=Background-TCP-Established" {
		t.Errorf("label = %q", labels[0])
	}
	bot := 0
	for _, l := range labels {
		if strings.Contains(l, "Botnet") {
			bot++
		}
	}
	if bot == 0 {
		t.Error("no botnet labels read")
	}
}

func TestZeekNjRAT(t *testing.T) {
	recs, labels, skipped := readFile(t, testenv.Data(t, "njrat-zeek", "labeled-conn.log.gz"), FormatZeek, Options{})
	if len(recs) != 992 || skipped != 0 {
		t.Fatalf("got %d records, %d skipped; want 992, 0", len(recs), skipped)
	}
	cc := 0
	for i, r := range recs {
		if r.DstAddr.Addr() == flow.AddrFrom(netip.MustParseAddr("41.108.179.197")) && r.DstPort == 1177 && r.Proto == 6 {
			cc++
			if !strings.Contains(labels[i], "Malicious") {
				t.Errorf("C&C row labelled %q", labels[i])
			}
		}
	}
	if cc != 237 {
		t.Errorf("%d C&C connections, want 237", cc)
	}
	// ts 19.981745, duration 0.136721, IP bytes 82+98, packets 1+1.
	if r := recs[0]; r.TimeStartMs != 19982 || r.TimeEndMs != 19982+136 || r.Bytes != 180 || r.Packets != 2 || r.Proto != 17 {
		t.Errorf("first record = %+v", r)
	}
}

func TestCICFlowMeterAres(t *testing.T) {
	recs, labels, skipped := readFile(t, testenv.Data(t, "cicids2017-ares", "Botnet_736.csv"), FormatCICFlowMeter, Options{})
	if len(recs) != 736 || skipped != 0 {
		t.Fatalf("got %d records, %d skipped; want 736, 0", len(recs), skipped)
	}
	c2 := flow.AddrFrom(netip.MustParseAddr("205.174.165.73"))
	bots := map[flow.Addr]int{}
	for i, r := range recs {
		if r.DstAddr.Addr() != c2 || r.DstPort != 8080 || r.Proto != 6 {
			t.Fatalf("record %d is not to the C&C", i)
		}
		bots[r.SrcAddr.Addr()]++
		if labels[i] != "Botnet" {
			t.Errorf("label %q", labels[i])
		}
	}
	if len(bots) != 5 {
		t.Errorf("%d bots, want 5", len(bots))
	}
	// 2017-07-07 13:39:36.267908, 81379 µs, 5+4 packets, 196+128 bytes.
	want := time.Date(2017, 7, 7, 13, 39, 36, 267908000, time.UTC).UnixMilli()
	if r := recs[0]; r.TimeStartMs != want || r.TimeEndMs != want+81 || r.Packets != 9 || r.Bytes != 324 {
		t.Errorf("first record = %+v", r)
	}
}

func TestGenericCSV(t *testing.T) {
	in := "when;from;to;dp;p;b1;b2;tag\n" +
		"1700000000.5;10.0.0.1;192.0.2.7;443;tcp;100;200;x\n" +
		"garbage;10.0.0.1;192.0.2.7;443;tcp;1;1;x\n" +
		"1700000010;2001:db8::1;2001:db8::2;53;17;5;-;y\n"
	m, err := ParseMapping("start=when,src=from,dst=to,dport=dp,proto=p,bytes=b1+b2,label=tag,sep=;")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte(in))
	_ = zw.Close()
	r, err := NewReader(&buf, FormatCSV, Options{Mapping: m})
	if err != nil {
		t.Fatal(err)
	}
	recs, labels, err := ReadAll(r, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []flow.Record{
		{TimeStartMs: 1700000000500, TimeEndMs: 1700000000500, TimeReceivedMs: 1700000000500, SrcAddr: raw("10.0.0.1"), DstAddr: raw("192.0.2.7"), DstPort: 443, Proto: 6, Bytes: 300, SamplingRate: 1, Protocol: flow.ProtocolFile},
		{TimeStartMs: 1700000010000, TimeEndMs: 1700000010000, TimeReceivedMs: 1700000010000, SrcAddr: raw("2001:db8::1"), DstAddr: raw("2001:db8::2"), DstPort: 53, Proto: 17, Bytes: 5, SamplingRate: 1, Protocol: flow.ProtocolFile},
	}
	if diff := cmp.Diff(recs, want); diff != "" {
		t.Errorf("records (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(labels, []string{"x", "y"}); diff != "" {
		t.Errorf("labels (-got +want):\n%s", diff)
	}
	if r.Skipped() != 1 {
		t.Errorf("skipped = %d, want 1", r.Skipped())
	}
}

func TestParseMappingErrors(t *testing.T) {
	for _, s := range []string{"", "start=a", "start=a,src=b,dst=c,bogus=d", "start", "start=a,src=b,dst=c,dur_unit=h"} {
		if _, err := ParseMapping(s); err == nil {
			t.Errorf("ParseMapping(%q) succeeded", s)
		}
	}
	r := strings.NewReader("a,b\n1,2\n")
	m, _ := ParseMapping("start=a,src=b,dst=c")
	if _, err := NewReader(r, FormatCSV, Options{Mapping: m}); err == nil {
		t.Error("missing column accepted")
	}
}

// TestNfcapdFromSoftflowd writes an nfcapd file with Debian's nfcapd from
// softflowd's NetFlow v9 export of a Slips capture, and reads it back: the
// totals must be those that `nfdump -I` reports for the same file.
func TestNfcapdFromSoftflowd(t *testing.T) {
	softflowd := testenv.Tool(t, "softflowd")
	nfcapd := testenv.Tool(t, "nfcapd")
	nfdumpBin := testenv.Tool(t, "nfdump")
	pcap := testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap")
	dir := t.TempDir()
	port := freeUDPPort(t)
	srv := exec.Command(nfcapd, "-p", port, "-b", "127.0.0.1", "-w", dir, "-I", "test")
	var log bytes.Buffer
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if out, err := exec.Command(softflowd, "-r", pcap, "-n", "127.0.0.1:"+port, "-v", "9").CombinedOutput(); err != nil {
		t.Fatalf("softflowd: %v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	_ = srv.Process.Signal(os.Interrupt)
	_ = srv.Wait()
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.*"))
	if len(files) != 1 {
		t.Fatalf("nfcapd wrote %v\n%s", files, log.String())
	}
	info, err := exec.Command(nfdumpBin, "-r", files[0], "-I").CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump -I: %v\n%s", err, info)
	}
	recs, _, skipped := readFile(t, files[0], FormatNfcapd, Options{})
	var pkts, byts uint64
	for _, r := range recs {
		pkts += r.Packets
		byts += r.Bytes
		if r.TimeStartMs <= 0 || r.TimeEndMs < r.TimeStartMs || r.Proto != 6 {
			t.Fatalf("bad record %+v", r)
		}
	}
	for _, want := range []string{"Flows: " + itoa(len(recs)), "Packets: " + itoa(int(pkts)), "Bytes: " + itoa(int(byts))} {
		if !strings.Contains(string(info), want+"\n") {
			t.Errorf("nfdump -I disagrees, want %q in:\n%s", want, info)
		}
	}
	if len(recs) != 594 || skipped != 0 {
		t.Errorf("read %d records (%d skipped), want 594", len(recs), skipped)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func freeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, port, _ := net.SplitHostPort(c.LocalAddr().String())
	return port
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), FormatZeek, Options{}); err == nil {
		t.Error("missing file opened")
	}
	if _, err := NewReader(strings.NewReader("ts\tx\n"), FormatZeek, Options{}); err == nil {
		t.Error("zeek without #fields accepted")
	}
	if _, err := ParseFormat("pcap"); err == nil {
		t.Error("unknown format accepted")
	}
	r, err := NewReader(strings.NewReader("#fields\tts\tid.orig_h\tid.resp_h\n"), FormatZeek, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Next(&flow.Record{}); !errors.Is(err, io.EOF) {
		t.Errorf("Next on empty log = %v, want EOF", err)
	}
}

// FuzzReaders checks that no text reader panics or loops on damaged input.
func FuzzReaders(f *testing.F) {
	f.Add("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label\n2011/08/18 15:40:53.826372,2.98,tcp,1.2.3.4,0x10,->,5.6.7.8,80,S,0,0,3,184,122,x\n", uint8(0))
	f.Add("#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\n1.5\t::1\t1\t::2\t2\ttcp\t-\n", uint8(1))
	f.Add("Src IP,Dst IP,Timestamp,Protocol\n1.1.1.1,2.2.2.2,2017-07-07 13:39:36.1,6\n", uint8(2))
	f.Fuzz(func(t *testing.T, in string, which uint8) {
		format := []Format{FormatBinetflow, FormatZeek, FormatCICFlowMeter}[int(which)%3]
		r, err := NewReader(strings.NewReader(in), format, Options{})
		if err != nil {
			return
		}
		var rec flow.Record
		for i := 0; i < 10000; i++ {
			if err := r.Next(&rec); err != nil {
				return
			}
		}
	})
}
