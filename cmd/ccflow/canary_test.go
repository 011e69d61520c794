package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ccflow/ccflow/collector/pcap"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy/canary"
	"github.com/ccflow/ccflow/sink/parquet"
	"github.com/ccflow/ccflow/testenv"
)

// The canary test's addresses. The Slips capture's subscriber becomes an
// IPv4 canary; its connections to one of the two remotes become IPv6 flows
// whose subscriber is an IPv6 canary. All are in documentation ranges, and
// no canary's text is a prefix of another address of the run.
var (
	captureSub     = netip.MustParseAddr("147.32.80.37")
	captureRemote6 = netip.MustParseAddr("141.193.213.20") // its flows become IPv6
	canarySub4     = netip.MustParseAddr("192.0.2.37")
	canarySub6     = netip.MustParseAddr("2001:db8:c0:ffee::37")
	remote6        = netip.MustParseAddr("2001:db8:cafe::20")
	// The remotes stay in the clear (P5): a second scan must find them.
	clearRemotes = []netip.Addr{netip.MustParseAddr("141.193.213.21"), remote6}
)

const canarySubscribers = "192.0.2.0/24,2001:db8:c0:ffee::/64"

// The capture spans 11 minutes: a window and hop shorter than the defaults
// make the detector score windows during the run (its pair state lands in
// the checkpoint). It reports no candidate for this capture (one
// subscriber per remote), so the candidates file stays empty; the scan
// covers whatever a run writes.
const detectWindow, detectHop = "10m", "1m"

// TestCanaryPipeline is privacy invariant P1's canary test on the real
// pipeline (issue 3). The Slips capture, rewritten so that its subscriber
// is a canary (IPv4 192.0.2.37, and IPv6 2001:db8:c0:ffee::37 for the
// flows converted to IPv6), goes through softflowd (NetFlow v9 and IPFIX)
// into the ccflow binary, built by the test and run as processes:
//
//   - split: ccflow collect -> real Kafka broker -> ccflow detect (Parquet
//     sink, checkpoint, candidates), logs at debug level in JSON;
//   - one process: ccflow run (in-process bus), logs at debug level in text.
//
// Afterwards every byte the runs produced — stdout and stderr of every
// process (keygen included), every metrics page (fetched before the stop),
// every file under the runs' directories (their working directory, HOME,
// keys with keyring.json, Parquet, checkpoint, candidates, spool), every
// message of the flow topic and the dead-letter topic as kafka-go reads
// them (keys, headers, values) and as raw record batches from a Fetch
// request — is searched for every byte form of the canaries (canary.Forms:
// 4- and 16-byte binary, text, hex in both cases, IPv4-mapped) after
// decoding zstd/gzip/lz4, Kafka batches, Arrow IPC and Parquet: zero hits.
// The scan must have decoded as many flows from Kafka and from Parquet as
// the pipeline reports it processed, and the remote addresses (kept in the
// clear, P5) must be found in the decoded columns, so a scan that decodes
// nothing cannot pass. The production binary runs with
// CCFLOW_TEST_PRIVACY_IDENTITY=1 set, which it must ignore.
//
// Positive control: the same runs with the binary built with the
// ccflow_testhooks tag (pseudonymization disabled by the same variable)
// must show both canaries in the decoded Kafka messages (kafka-go and raw
// batches), the decoded Parquet files and the detector checkpoint.
func TestCanaryPipeline(t *testing.T) {
	broker := testenv.Service(t, "CCFLOW_TEST_KAFKA")
	softflowd := testenv.Tool(t, "softflowd")
	goTool := testenv.Tool(t, "go")
	capture := testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap")
	start := time.Now()

	work := t.TempDir()
	input := filepath.Join(work, "input", "canary.pcap")
	n4, n6 := rewriteCapture(t, capture, input)
	t.Logf("capture: %d packets rewritten to %s, %d converted to IPv6 (%s)", n4, canarySub4, n6, canarySub6)

	// Two binaries, built concurrently: production and test hooks.
	bins := filepath.Join(work, "bin")
	prod, hooked := filepath.Join(bins, "ccflow"), filepath.Join(bins, "ccflow-testhooks")
	var wg sync.WaitGroup
	var buildErrs [2]error
	for i, b := range []struct{ out, tags string }{{prod, ""}, {hooked, "ccflow_testhooks"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buildErrs[i] = buildCcflow(goTool, b.out, b.tags)
		}()
	}
	wg.Wait()
	if err := errors.Join(buildErrs[:]...); err != nil {
		t.Fatal(err)
	}
	t.Logf("built both binaries in %s", time.Since(start).Round(time.Millisecond))

	ex := canaryExporter{softflowd: softflowd, pcap: input}
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Run("production", func(t *testing.T) {
		t.Parallel()
		// The identity hook's variable is set here too: a production
		// build must ignore it (the hook is compiled out).
		runs := runCanaryPipelines(t, prod, []string{"CCFLOW_TEST_PRIVACY_IDENTITY=1"}, broker, "canary-prod-"+suffix, ex, true)
		res := scanCanaryRuns(t, runs, broker, canarySub4, canarySub6)
		if len(res.hits) > 0 {
			t.Errorf("P1 violated: %s\nby place:\n%s(random data gives about %.2g hits by chance over the %d bytes scanned)",
				canary.Report(res.hits, 40), summarizeHits(res.hits, runs), res.expectedRandom, res.scanned)
		}
		checkCanaryDecoded(t, runs, res)
		// Remote addresses are kept in the clear (P5): the same scan of
		// the decoded outputs must find them, or it looked at nothing.
		remotes := scanCanaryRuns(t, runs, broker, clearRemotes...)
		for _, a := range clearRemotes {
			if !hitInPart(remotes.hits, a, "!arrow:flow.Remote") || !hitInPart(remotes.hits, a, "!parquet:flow.Remote") {
				t.Errorf("remote %s (kept in the clear) not found in the decoded Kafka messages and Parquet files", a)
			}
		}
	})
	t.Run("positive-control", func(t *testing.T) {
		t.Parallel()
		runs := runCanaryPipelines(t, hooked, []string{"CCFLOW_TEST_PRIVACY_IDENTITY=1"}, broker, "canary-ctl-"+suffix, ex, false)
		res := scanCanaryRuns(t, runs, broker, canarySub4, canarySub6)
		checkCanaryDecoded(t, runs, res)
		for _, a := range []netip.Addr{canarySub4, canarySub6} {
			for _, where := range []string{"/kafka-go/", "!kafka:", "!arrow:flow.Sub", "!parquet:flow.Sub", "!parquet:rg", "detector.ckpt"} {
				if !hitInPart(res.hits, a, where) {
					t.Errorf("positive control: canary %s not found in a part decoded by %q", a, where)
				}
			}
		}
		t.Logf("positive control: %d hits:\n%s", len(res.hits), summarizeHits(res.hits, runs))
	})
	t.Cleanup(func() { t.Logf("wall time %s", time.Since(start).Round(time.Millisecond)) })
}

// buildCcflow builds ./cmd/ccflow (the package under test) into out with
// the go command goTool.
func buildCcflow(goTool, out, tags string) error {
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

// rewriteCapture copies the Ethernet capture in to out with the subscriber
// captureSub replaced by canarySub4, and the packets between captureSub and
// captureRemote6 converted to IPv6 between canarySub6 and remote6. IPv4
// header checksums and TCP/UDP checksums are recomputed. It returns the
// number of packets rewritten in IPv4 and converted to IPv6.
func rewriteCapture(t *testing.T, in, out string) (n4, n6 int) {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcap.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != pcap.LinkEthernet {
		t.Fatalf("capture link type %d, want Ethernet", r.LinkType())
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	of, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	w, err := pcap.NewWriter(of, pcap.LinkEthernet)
	if err != nil {
		t.Fatal(err)
	}
	sub4 := captureSub.As4()
	for {
		p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frame := bytes.Clone(p.Data)
		if len(frame) >= 14+20 && binary.BigEndian.Uint16(frame[12:]) == 0x0800 {
			ip := frame[14:]
			ihl := int(ip[0]&0x0f) * 4
			total := int(binary.BigEndian.Uint16(ip[2:]))
			src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
			complete := p.OrigLen == len(p.Data) && total <= len(ip) && ihl >= 20 && ihl <= total
			fragment := binary.BigEndian.Uint16(ip[6:])&0x3fff != 0
			switch {
			case src != captureSub && dst != captureSub:
			case (src == captureRemote6 || dst == captureRemote6) && complete && !fragment:
				frame = toIPv6(frame[:14], ip[:total], ihl, src == captureSub)
				n6++
			default:
				if src == captureSub {
					copy(ip[12:16], canarySub4.AsSlice())
				}
				if dst == captureSub {
					copy(ip[16:20], canarySub4.AsSlice())
				}
				binary.BigEndian.PutUint16(ip[10:], 0)
				binary.BigEndian.PutUint16(ip[10:], inetChecksum(0, ip[:ihl]))
				if complete && !fragment {
					fixL4Checksum(ip[9], ip[12:16], ip[16:20], ip[ihl:total])
				}
				n4++
			}
		}
		if bytes.Contains(frame, sub4[:]) {
			t.Fatalf("packet at %s still holds the capture's subscriber address", p.Time)
		}
		if err := w.WritePacket(p.Time, frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := of.Close(); err != nil {
		t.Fatal(err)
	}
	if n4 == 0 || n6 == 0 {
		t.Fatalf("capture rewrite: %d IPv4 and %d IPv6 packets; the capture is not the expected one", n4, n6)
	}
	return n4, n6
}

// toIPv6 returns an Ethernet frame holding ip (an IPv4 packet with header
// length ihl) as an IPv6 packet between canarySub6 and remote6.
func toIPv6(eth, ip []byte, ihl int, outbound bool) []byte {
	src, dst := canarySub6.As16(), remote6.As16()
	if !outbound {
		src, dst = dst, src
	}
	payload := ip[ihl:]
	frame := append(bytes.Clone(eth[:12]), 0x86, 0xdd)
	tc := ip[1]
	frame = append(frame, 0x60|tc>>4, tc<<4, 0, 0)
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(payload)))
	frame = append(frame, ip[9], ip[8]) // next header = protocol, hop limit = TTL
	frame = append(frame, src[:]...)
	frame = append(frame, dst[:]...)
	start := len(frame)
	frame = append(frame, payload...)
	fixL4Checksum(ip[9], src[:], dst[:], frame[start:])
	return frame
}

// fixL4Checksum recomputes the TCP or UDP checksum of segment seg between
// src and dst (4 or 16 bytes each: the pseudo-header of RFC 793 / 8200).
func fixL4Checksum(proto byte, src, dst, seg []byte) {
	var off int
	switch proto {
	case 6:
		off = 16
	case 17:
		off = 6
	default:
		return
	}
	if len(seg) < off+2 {
		return
	}
	binary.BigEndian.PutUint16(seg[off:], 0)
	var pseudo []byte
	pseudo = append(pseudo, src...)
	pseudo = append(pseudo, dst...)
	if len(src) == 4 {
		pseudo = append(pseudo, 0, proto)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	} else {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, proto)
	}
	sum := inetChecksum(inetSum(0, pseudo), seg)
	if proto == 17 && sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(seg[off:], sum)
}

// inetSum adds b as big-endian 16-bit words to sum (one's complement
// arithmetic, folded at the end by checksum).
func inetSum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

// inetChecksum returns the Internet checksum of b with sum already added.
func inetChecksum(sum uint32, b []byte) uint16 {
	sum = inetSum(sum, b)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// canaryExporter replays the canary capture with softflowd.
type canaryExporter struct {
	softflowd, pcap string
}

// export sends the capture as NetFlow v9 to netflowAddr and as IPFIX to
// ipfixAddr, with absolute flow times (-A milli), so that the flows carry
// the capture's real times (2024-02-08, one key epoch) and the detector
// tracks them (its state then lands in the checkpoint). Without -A,
// softflowd reading a file puts the pcap's packet times against its own
// uptime and the times come out off by the 32-bit millisecond wrap (up to
// 49.7 days before or after now), which the detector drops as late.
func (e canaryExporter) export(t *testing.T, netflowAddr, ipfixAddr string) {
	t.Helper()
	for _, args := range [][]string{
		{"-n", netflowAddr, "-v", "9", "-A", "milli"},
		{"-n", ipfixAddr, "-v", "10", "-A", "milli"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, e.softflowd, append([]string{"-d", "-r", e.pcap}, args...)...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("softflowd %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// canaryProc is one ccflow process of a run.
type canaryProc struct {
	name        string
	cmd         *exec.Cmd
	stdout      syncBuffer
	stderr      syncBuffer
	metricsAddr string
	done        chan struct{}
	err         error
}

// startCanaryProc starts bin with args in dir with env and kills it at the
// end of the test if it still runs.
func startCanaryProc(t *testing.T, name, bin, dir string, env []string, args ...string) *canaryProc {
	t.Helper()
	p := &canaryProc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	for i, a := range args {
		if a == "--metrics-addr" {
			p.metricsAddr = args[i+1]
		}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// output returns what the process wrote so far, for failure messages.
func (p *canaryProc) output() string {
	return fmt.Sprintf("--- %s stdout:\n%s--- %s stderr:\n%s", p.name, p.stdout.String(), p.name, p.stderr.String())
}

func (p *canaryProc) String() string { return p.output() }

// stop sends SIGTERM and waits for a clean exit.
func (p *canaryProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not stop within 60 s\n%s", p.name, p.output())
	}
	if p.err != nil {
		t.Fatalf("%s: %v\n%s", p.name, p.err, p.output())
	}
}

// metrics returns the process's metrics page.
func (p *canaryProc) metrics(t *testing.T) string {
	t.Helper()
	code, page := get("http://" + p.metricsAddr + "/metrics")
	if code != 200 {
		t.Fatalf("%s: GET /metrics: status %d\n%s", p.name, code, p.output())
	}
	return page
}

// canaryMetricSum returns the sum of every series of metric name on page.
func canaryMetricSum(page, name string) float64 {
	var sum float64
	for _, line := range strings.Split(page, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// waitMetrics polls p's metrics page until cond holds or within passes.
func waitMetrics(t *testing.T, p *canaryProc, what string, within time.Duration, cond func(page string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		page := p.metrics(t)
		if cond(page) {
			return page
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not reached within %s; metrics:\n%s\n%s", p.name, what, within, page, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// run is what one pipeline run produced.
type canaryRun struct {
	name string
	// dir holds every file the run's processes wrote: their working
	// directory, keys, sink, state, candidates, spool, HOME.
	dir string
	// texts are the processes' stdout and stderr and the metrics pages.
	texts map[string]string
	// topics are the Kafka topics the run wrote (flows, dead letters).
	topics []string
	// published is the number of flows the collector side handed to the
	// bus (ccflow_ingest_flows_total); stored the number the detector side
	// consumed and wrote to the Parquet sink (ccflow_analysis_flows_total).
	published, stored int64
	// parquetFlows is the number of flows sink/parquet.ReadFlows reads
	// back from the run's flows table.
	parquetFlows int64
	// reveal asks for the reveal round trip after the run (production
	// binary only: the positive control has no pseudonyms to reveal).
	reveal bool
}

// runCanaryPipelines runs the split pipeline and the one-process pipeline of bin
// concurrently.
func runCanaryPipelines(t *testing.T, bin string, extraEnv []string, broker, prefix string, ex canaryExporter, reveal bool) []*canaryRun {
	t.Helper()
	runs := make([]*canaryRun, 2)
	// The runs' directories belong to t: they outlive the subtests.
	split, one := newCanaryRun(t, "split"), newCanaryRun(t, "run")
	split.reveal = reveal
	var wg sync.WaitGroup
	for i, f := range []func(*testing.T) *canaryRun{
		func(t *testing.T) *canaryRun { return runCanarySplit(t, split, bin, extraEnv, broker, prefix, ex) },
		func(t *testing.T) *canaryRun { return runCanaryOneProcess(t, one, bin, extraEnv, ex) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// t.Fatal must run on the test's goroutine: run as a subtest.
			t.Run([]string{"split", "run"}[i], func(t *testing.T) { runs[i] = f(t) })
		}()
	}
	wg.Wait()
	if t.Failed() || runs[0] == nil || runs[1] == nil {
		t.FailNow()
	}
	return runs
}

// canaryEnv returns the environment of a run's processes: the test's, without
// any CCFLOW_ variable, with HOME and XDG directories inside dir (so that
// a default path lands where the scan looks) and extra.
func canaryEnv(dir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CCFLOW_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+filepath.Join(dir, "home"), "XDG_STATE_HOME="+filepath.Join(dir, "home", "state"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "home", "cache"), "XDG_CONFIG_HOME="+filepath.Join(dir, "home", "config"))
	return append(env, extra...)
}

// canaryFixedKeys creates the key directory with the keys of every epoch from
// the capture's (2024-02-08) to the one after now (keygen --from), then
// replaces every key by a fixed key derived from its epoch, so that a
// chance match of a 4-byte canary form in pseudonyms is reproducible
// rather than flaky.
func canaryFixedKeys(t *testing.T, r *canaryRun, bin string, env []string) string {
	t.Helper()
	keys := filepath.Join(r.dir, "keys")
	p := startCanaryProc(t, "keygen", bin, r.dir, env, "keygen", "--dir", keys, "--from", "2024-02-08")
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("keygen did not finish\n%s", p.output())
	}
	if p.err != nil {
		t.Fatalf("keygen: %v\n%s", p.err, p.output())
	}
	r.collectOutput(p)
	files, err := filepath.Glob(filepath.Join(keys, "epoch-*.key"))
	if err != nil || len(files) < 2 {
		t.Fatalf("keygen made %d key files: %v", len(files), err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		old, _ := m["key"].(string)
		sum := sha256.Sum256([]byte(fmt.Sprintf("ccflow canary test key, epoch %v", m["epoch"])))
		if len(old) == 0 || len(old) > 2*len(sum) {
			t.Fatalf("%s: key of %d hex digits", name, len(old))
		}
		m["key"] = hex.EncodeToString(sum[:len(old)/2])
		if b, err = json.Marshal(m); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, append(b, '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// newCanaryRun returns an empty run with a directory of t's.
func newCanaryRun(t *testing.T, name string) *canaryRun {
	t.Helper()
	r := &canaryRun{name: name, dir: t.TempDir(), texts: map[string]string{}}
	for _, d := range []string{"home", "spool"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// collectOutput records a stopped process's output.
func (r *canaryRun) collectOutput(p *canaryProc) {
	r.texts[p.name+" stdout"], r.texts[p.name+" stderr"] = p.stdout.String(), p.stderr.String()
}

// waitExported waits until the collector side has received softflowd's
// records and handed every flow to the bus, and returns the flow count.
func waitExported(t *testing.T, p *canaryProc, extra func(page string) bool) (string, int64) {
	t.Helper()
	var last float64
	var since time.Time
	page := waitMetrics(t, p, "all exported flows handed to the bus", 60*time.Second, func(page string) bool {
		recv := canaryMetricSum(page, "ccflow_collector_flows_total")
		out := canaryMetricSum(page, "ccflow_ingest_flows_total")
		if recv != last || recv == 0 {
			last, since = recv, time.Now()
			return false
		}
		return out > 0 && time.Since(since) > time.Second && (extra == nil || extra(page))
	})
	return page, int64(canaryMetricSum(page, "ccflow_ingest_flows_total"))
}

// runCanarySplit runs ccflow collect -> Kafka -> ccflow detect.
func runCanarySplit(t *testing.T, r *canaryRun, bin string, extraEnv []string, broker, prefix string, ex canaryExporter) *canaryRun {
	topic, dead := prefix+"-flows", prefix+"-dead"
	r.topics = []string{topic, dead}
	env := canaryEnv(r.dir, append([]string{
		"CCFLOW_BUS_KAFKA_BROKERS=" + broker, "CCFLOW_BUS_KAFKA_TOPIC=" + topic,
		"CCFLOW_BUS_KAFKA_DEAD_LETTER_TOPIC=" + dead, "CCFLOW_BUS_KAFKA_GROUP=" + prefix,
		"CCFLOW_BUS_KAFKA_SPOOL_DIR=" + filepath.Join(r.dir, "spool"),
	}, extraEnv...)...)
	keys := canaryFixedKeys(t, r, bin, env)

	det := startCanaryProc(t, "detect", bin, r.dir, env, "detect", "--metrics-addr", freePort(t, "tcp"),
		"--parquet-dir", filepath.Join(r.dir, "data"), "--state-dir", filepath.Join(r.dir, "state"),
		"--candidates", filepath.Join(r.dir, "candidates.jsonl"), "--window", detectWindow, "--hop", detectHop,
		"--log-level", "debug", "--log-format", "json")
	waitReady(t, det.metricsAddr, det)
	nf, ipfix := freePort(t, "udp"), freePort(t, "udp")
	col := startCanaryProc(t, "collect", bin, r.dir, env, "collect", "--netflow-addr", nf, "--ipfix-addr", ipfix, "--sflow-addr", "",
		"--metrics-addr", freePort(t, "tcp"), "--subscribers", canarySubscribers, "--keys", keys,
		"--log-level", "debug", "--log-format", "json")
	waitReady(t, col.metricsAddr, col)

	ex.export(t, nf, ipfix)
	page, published := waitExported(t, col, func(page string) bool {
		return canaryMetricSum(page, "ccflow_bus_produced_flows_total") == canaryMetricSum(page, "ccflow_ingest_flows_total")
	})
	r.texts["collect /metrics"] = page
	col.stop(t)
	r.collectOutput(col)

	r.texts["detect /metrics"] = waitMetrics(t, det, fmt.Sprintf("%d flows consumed", published), 60*time.Second, func(page string) bool {
		return int64(canaryMetricSum(page, "ccflow_analysis_flows_total")) >= published
	})
	det.stop(t)
	r.collectOutput(det)
	r.published, r.stored = published, int64(canaryMetricSum(r.texts["detect /metrics"], "ccflow_analysis_flows_total"))
	r.parquetFlows = countParquetFlows(t, filepath.Join(r.dir, "data"))
	if r.reveal {
		revealRoundTrip(t, r, bin, env, keys)
	}
	return r
}

// revealRoundTrip reveals the subscriber pseudonym of one IPv4 and one
// IPv6 flow of the run's Parquet table with ccflow reveal: they must be the
// canaries (so the canaries really went through the pipeline under their
// pseudonyms), and the reveal writes the audit log into the key directory,
// which the scan then searches (it records tokens, never addresses).
// Reveal's stdout holds the addresses by design and is not scanned; its
// stderr (the audit head) and audit verify's output are.
func revealRoundTrip(t *testing.T, r *canaryRun, bin string, env []string, keys string) {
	t.Helper()
	var tokens []string
	var epoch uint32
	seen := map[bool]bool{}
	err := parquet.ReadFlows(context.Background(), filepath.Join(r.dir, "data"), func(b flow.Batch) error {
		for _, f := range b.Flows {
			v4 := f.Remote.Netip().Unmap().Is4()
			if !seen[v4] && (epoch == 0 || f.Epoch == epoch) {
				seen[v4], epoch = true, f.Epoch
				tokens = append(tokens, f.Sub.String())
			}
		}
		return nil
	})
	if err != nil || len(tokens) != 2 {
		t.Fatalf("reveal: %d tokens of one epoch from the Parquet table (want an IPv4 and an IPv6 flow): %v", len(tokens), err)
	}
	p := startCanaryProc(t, "reveal", bin, r.dir, env, append([]string{"reveal", "--keys", keys, "--subscribers", canarySubscribers,
		"--epoch", strconv.FormatUint(uint64(epoch), 10), "--reason", "canary test round trip", "--operator", "canary-test"}, tokens...)...)
	<-p.done
	if p.err != nil {
		t.Fatalf("reveal: %v\n%s", p.err, p.output())
	}
	for _, a := range []netip.Addr{canarySub4, canarySub6} {
		if !strings.Contains(p.stdout.String(), " "+a.String()+"\n") {
			t.Errorf("reveal of %v printed\n%s\nwant %s among the addresses", tokens, p.stdout.String(), a)
		}
	}
	r.texts["reveal stderr"] = p.stderr.String()
	v := startCanaryProc(t, "audit-verify", bin, r.dir, env, "audit", "verify", "--log", filepath.Join(keys, "audit.log"))
	<-v.done
	if v.err != nil || !strings.Contains(v.stdout.String(), "intact: 2 entries") {
		t.Errorf("audit verify: %v\n%s", v.err, v.output())
	}
	r.collectOutput(v)
}

// runCanaryOneProcess runs ccflow run (in-process bus) with the same export.
func runCanaryOneProcess(t *testing.T, r *canaryRun, bin string, extraEnv []string, ex canaryExporter) *canaryRun {
	env := canaryEnv(r.dir, extraEnv...)
	keys := canaryFixedKeys(t, r, bin, env)
	nf, ipfix := freePort(t, "udp"), freePort(t, "udp")
	p := startCanaryProc(t, "run", bin, r.dir, env, "run", "--netflow-addr", nf, "--ipfix-addr", ipfix, "--sflow-addr", "",
		"--metrics-addr", freePort(t, "tcp"), "--subscribers", canarySubscribers, "--keys", keys,
		"--parquet-dir", filepath.Join(r.dir, "data"), "--state-dir", filepath.Join(r.dir, "state"),
		"--candidates", filepath.Join(r.dir, "candidates.jsonl"), "--window", detectWindow, "--hop", detectHop,
		"--log-level", "debug", "--log-format", "text")
	waitReady(t, p.metricsAddr, p)
	ex.export(t, nf, ipfix)
	page, published := waitExported(t, p, func(page string) bool {
		return canaryMetricSum(page, "ccflow_analysis_flows_total") == canaryMetricSum(page, "ccflow_ingest_flows_total")
	})
	r.texts["run /metrics"] = page
	p.stop(t)
	r.collectOutput(p)
	r.published, r.stored = published, int64(canaryMetricSum(page, "ccflow_analysis_flows_total"))
	r.parquetFlows = countParquetFlows(t, filepath.Join(r.dir, "data"))
	return r
}

// countParquetFlows counts the flows of a Parquet sink directory with the
// sink's own reader (the cross-check of the canary decoder's count).
func countParquetFlows(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := parquet.ReadFlows(context.Background(), dir, func(b flow.Batch) error {
		n += int64(len(b.Flows))
		return nil
	})
	if err != nil {
		t.Fatalf("read the Parquet flows table: %v", err)
	}
	return n
}

// canaryScanResult is what scanCanaryRuns found and decoded.
type canaryScanResult struct {
	hits           []canary.Hit
	scanned        int64
	expectedRandom float64
	// Per run name: flows decoded from Kafka messages as kafka-go reads
	// them, from raw record batches, and from Parquet files; Kafka
	// messages read and records in the raw batches.
	kafkaFlows, rawFlows, parquetFlows map[string]int64
	messages, records                  map[string]int64
	files                              int
}

// scanCanaryRuns scans everything the runs produced for addrs.
func scanCanaryRuns(t *testing.T, runs []*canaryRun, broker string, addrs ...netip.Addr) canaryScanResult {
	t.Helper()
	var arrowC, pqC, kafkaC canary.Counts
	sc := canary.NewScanner(addrs...)
	sc.AddDecoder(canary.KafkaBatches(&kafkaC))
	sc.AddDecoder(canary.ArrowIPC(&arrowC))
	sc.AddDecoder(canary.Parquet(&pqC))
	res := canaryScanResult{kafkaFlows: map[string]int64{}, rawFlows: map[string]int64{}, parquetFlows: map[string]int64{},
		messages: map[string]int64{}, records: map[string]int64{}}
	add := func(h []canary.Hit, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("scan: %v", err)
		}
		res.hits = append(res.hits, h...)
	}
	for _, r := range runs {
		for name, text := range r.texts {
			add(sc.ScanBytes(r.name+"/"+name, []byte(text)))
		}
		before := pqC.Flows
		err := filepath.WalkDir(r.dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			res.files++
			h, err := sc.ScanFile(path)
			add(h, err)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		res.parquetFlows[r.name] = pqC.Flows - before
		for _, topic := range r.topics {
			before := arrowC.Flows
			msgs := readTopicMessages(t, broker, topic)
			for _, m := range msgs {
				where := fmt.Sprintf("%s/kafka-go/%s/%d/%d", r.name, m.Topic, m.Partition, m.Offset)
				add(sc.ScanBytes(where+"/key", m.Key))
				for i, h := range m.Headers {
					add(sc.ScanBytes(fmt.Sprintf("%s/header%d/name", where, i), []byte(h.Key)))
					add(sc.ScanBytes(fmt.Sprintf("%s/header%d/value", where, i), h.Value))
				}
				add(sc.ScanBytes(where+"/value", m.Value))
			}
			res.messages[r.name] += int64(len(msgs))
			res.kafkaFlows[r.name] += arrowC.Flows - before

			before, beforeRecs := arrowC.Flows, kafkaC.Records
			for p, raw := range fetchRawBatches(t, broker, topic) {
				add(sc.ScanBytes(fmt.Sprintf("%s/fetch/%s-%d%s", r.name, topic, p, canary.KafkaSuffix), raw))
			}
			res.rawFlows[r.name] += arrowC.Flows - before
			res.records[r.name] += kafkaC.Records - beforeRecs
		}
	}
	res.scanned = sc.Scanned()
	res.expectedRandom = sc.ExpectedRandomHits(res.scanned)
	t.Logf("scan for %v: %d files and %d outputs, %d bytes searched (decoded parts included; %.1g chance hits expected in random data); decoded %d Kafka batches with %d records, %d Arrow streams with %d flows, %d Parquet files with %d rows (%d flows); %d hits",
		addrs, res.files, countCanaryTexts(runs), res.scanned, res.expectedRandom, kafkaC.Inputs, kafkaC.Records, arrowC.Inputs, arrowC.Flows, pqC.Inputs, pqC.Rows, pqC.Flows, len(res.hits))
	return res
}

func countCanaryTexts(runs []*canaryRun) int {
	n := 0
	for _, r := range runs {
		n += len(r.texts)
	}
	return n
}

// checkCanaryDecoded fails unless the scan decoded every flow the pipeline
// reports: from Kafka (messages and raw batches) as many as the collector
// published, from Parquet as many as the detector stored and the sink's
// reader reads.
func checkCanaryDecoded(t *testing.T, runs []*canaryRun, res canaryScanResult) {
	t.Helper()
	for _, r := range runs {
		t.Logf("%s: published %d, stored %d, Parquet (sink reader) %d; scan decoded Kafka %d messages / %d flows, raw batches %d records / %d flows, Parquet %d flows",
			r.name, r.published, r.stored, r.parquetFlows, res.messages[r.name], res.kafkaFlows[r.name], res.records[r.name], res.rawFlows[r.name], res.parquetFlows[r.name])
		if r.published == 0 || r.stored != r.published || r.parquetFlows != r.stored {
			t.Errorf("%s: published %d flows, detector consumed %d, Parquet holds %d", r.name, r.published, r.stored, r.parquetFlows)
		}
		if res.parquetFlows[r.name] != r.parquetFlows {
			t.Errorf("%s: the scan decoded %d flows from Parquet, the sink holds %d", r.name, res.parquetFlows[r.name], r.parquetFlows)
		}
		if r.topics == nil {
			continue
		}
		if res.kafkaFlows[r.name] != r.published || res.rawFlows[r.name] != r.published || res.records[r.name] != res.messages[r.name] {
			t.Errorf("%s: the scan decoded %d flows from %d Kafka messages and %d flows from %d raw records; %d published",
				r.name, res.kafkaFlows[r.name], res.messages[r.name], res.rawFlows[r.name], res.records[r.name], r.published)
		}
	}
}

// hitInPart reports whether a hit of a has a path containing where.
func hitInPart(hits []canary.Hit, a netip.Addr, where string) bool {
	for _, h := range hits {
		if h.Addr == a && strings.Contains(h.Where, where) {
			return true
		}
	}
	return false
}

// summarizeHits groups hits by where they were found (run, file or output,
// decoder path; numbers replaced by #) and lists the forms found there.
func summarizeHits(hits []canary.Hit, runs []*canaryRun) string {
	type group struct {
		n     int
		forms map[string]bool
	}
	groups := map[string]*group{}
	var keys []string
	for _, h := range hits {
		w := h.Where
		for _, r := range runs {
			w = strings.Replace(w, r.dir+string(filepath.Separator), r.name+":", 1)
		}
		w = canaryDigitsRE.ReplaceAllString(w, "#")
		g := groups[w]
		if g == nil {
			g = &group{forms: map[string]bool{}}
			groups[w] = g
			keys = append(keys, w)
		}
		g.n++
		g.forms[h.Addr.String()+" "+h.Form] = true
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		forms := make([]string, 0, len(groups[k].forms))
		for f := range groups[k].forms {
			forms = append(forms, f)
		}
		sort.Strings(forms)
		fmt.Fprintf(&b, "  %6d  %s: %s\n", groups[k].n, k, strings.Join(forms, ", "))
	}
	return b.String()
}

var canaryDigitsRE = regexp.MustCompile(`[0-9]+`)

// readTopicMessages reads every message of every partition of topic from offset 0
// with kafka-go (which undoes Kafka's batch compression). A topic that was
// never created has no messages.
func readTopicMessages(t *testing.T, broker, topic string) []kafka.Message {
	t.Helper()
	parts, err := topicPartitions(broker, topic)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []kafka.Message
	for _, p := range parts {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := kafka.DialLeader(ctx, "tcp", broker, topic, p.ID)
		if err != nil {
			cancel()
			t.Fatalf("dial leader of %s/%d: %v", topic, p.ID, err)
		}
		first, last, err := conn.ReadOffsets()
		if err != nil {
			t.Fatal(err)
		}
		for off := first; off < last; {
			from := off
			if _, err := conn.Seek(off, kafka.SeekAbsolute); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			batch := conn.ReadBatch(1, 64<<20)
			for {
				m, err := batch.ReadMessage()
				if err != nil {
					break
				}
				msgs = append(msgs, m)
				off = m.Offset + 1
			}
			if err := batch.Close(); err != nil {
				t.Fatalf("read %s/%d at %d: %v", topic, p.ID, off, err)
			}
			if off == from {
				t.Fatalf("read %s/%d: no message at offset %d below the end %d", topic, p.ID, off, last)
			}
		}
		conn.Close()
		cancel()
	}
	return msgs
}

// topicPartitions returns the topicPartitions of topic, or none when it does not
// exist.
func topicPartitions(broker, topic string) ([]kafka.Partition, error) {
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		return nil, nil
	}
	return parts, err
}

// fetchRawBatches returns, per partition, the raw record batches of topic from
// offset 0 to the high watermark, as Fetch responses carry them (still
// compressed if the producer compressed them), through a hand-made Fetch
// request (kmsg encodes it; kafka-go only hands out decoded messages).
func fetchRawBatches(t *testing.T, broker, topic string) map[int][]byte {
	t.Helper()
	parts, err := topicPartitions(broker, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]byte{}
	for _, p := range parts {
		leader := net.JoinHostPort(p.Leader.Host, strconv.Itoa(p.Leader.Port))
		conn, err := net.DialTimeout("tcp", leader, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var raw []byte
		for off, corr := int64(0), int32(1); ; corr++ {
			req := kmsg.NewPtrFetchRequest()
			req.Version = 11 // not flexible: a plain response header
			req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 100, 1, 64<<20
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic = topic
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = int32(p.ID), off, 64<<20
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := conn.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("ccflow-canary-test")).AppendRequest(nil, req, corr)); err != nil {
				t.Fatal(err)
			}
			var size [4]byte
			if _, err := io.ReadFull(conn, size[:]); err != nil {
				t.Fatal(err)
			}
			body := make([]byte, binary.BigEndian.Uint32(size[:]))
			if _, err := io.ReadFull(conn, body); err != nil {
				t.Fatal(err)
			}
			if got := int32(binary.BigEndian.Uint32(body)); got != corr {
				t.Fatalf("fetch: correlation ID %d, want %d", got, corr)
			}
			resp := req.ResponseKind().(*kmsg.FetchResponse)
			if err := resp.ReadFrom(body[4:]); err != nil {
				t.Fatalf("fetch %s/%d: %v", topic, p.ID, err)
			}
			if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
				t.Fatalf("fetch %s/%d: unexpected response shape", topic, p.ID)
			}
			rpart := resp.Topics[0].Partitions[0]
			if rpart.ErrorCode != 0 {
				t.Fatalf("fetch %s/%d at %d: Kafka error %d", topic, p.ID, off, rpart.ErrorCode)
			}
			next := kafkaNextOffset(rpart.RecordBatches, off)
			raw = append(raw, kafkaCompleteBatches(rpart.RecordBatches)...)
			if next >= rpart.HighWatermark || next == off {
				if next < rpart.HighWatermark {
					t.Fatalf("fetch %s/%d: stuck at offset %d below the high watermark %d", topic, p.ID, off, rpart.HighWatermark)
				}
				break
			}
			off = next
		}
		conn.Close()
		out[p.ID] = raw
	}
	return out
}

// kafkaNextOffset returns the offset after the last complete record batch in b
// (base offset + last offset delta + 1), or off when b holds none.
func kafkaNextOffset(b []byte, off int64) int64 {
	for len(b) >= 61 {
		n := int64(binary.BigEndian.Uint32(b[8:]))
		if int64(len(b)) < 12+n {
			break
		}
		off = int64(binary.BigEndian.Uint64(b)) + int64(binary.BigEndian.Uint32(b[23:])) + 1
		b = b[12+n:]
	}
	return off
}

// kafkaCompleteBatches returns the complete record batches at the start of b
// (a Fetch response may end with a partial one).
func kafkaCompleteBatches(b []byte) []byte {
	n := 0
	for len(b)-n >= 12 {
		l := int(binary.BigEndian.Uint32(b[n+8:]))
		if len(b)-n < 12+l {
			break
		}
		n += 12 + l
	}
	return b[:n]
}
