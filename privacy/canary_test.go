package privacy_test

import (
	"bytes"
	"compress/gzip"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy"
	"github.com/ccflow/ccflow/privacy/canary"
)

// Canary subscriber addresses, from the documentation ranges; their text
// forms are not prefixes of any other address in the test.
var (
	canaries = []netip.Addr{
		netip.MustParseAddr("192.0.2.123"),
		netip.MustParseAddr("192.0.2.45"),
		netip.MustParseAddr("2001:db8:1::c4a7"),
		netip.MustParseAddr("2001:db8:1:77::1d"),
		netip.MustParseAddr("192.0.2.254"), // a CPE that exports flows itself
	}
	remotes = []netip.Addr{
		netip.MustParseAddr("198.51.100.9"),
		netip.MustParseAddr("2001:db8:ffff::53"),
	}
	router = netip.MustParseAddr("203.0.113.1")
)

// canaryRecords returns flows in every role: outbound, inbound, both sides
// subscribers, transit, with MACs, VLANs and NAT ports set.
func canaryRecords(start time.Time) []flow.Record {
	var recs []flow.Record
	add := func(src, dst netip.Addr, sp, dp uint16, exporter netip.Addr) {
		recs = append(recs, flow.Record{
			TimeStartMs: start.UnixMilli(), TimeEndMs: start.UnixMilli() + 30_000, TimeReceivedMs: start.UnixMilli() + 31_000,
			Protocol: flow.ProtocolNetFlow9, Exporter: flow.AddrFrom(exporter), ObsDomain: 1, InIf: 2, OutIf: 3,
			SrcAddr: flow.RawAddr(src.As16()), DstAddr: flow.RawAddr(dst.As16()), SrcPort: sp, DstPort: dp,
			Proto: 6, Bytes: 4242, Packets: 7, SamplingRate: 1,
			// The MAC embeds the binary form of canary 192.0.2.123: it must
			// be dropped.
			SrcMAC: flow.MAC{0x02, 0xc0, 0x00, 0x02, 0x7b, 0x01}, VLAN: 123,
			PostNATSrcPort: 41000, PostNATDstPort: 41001,
		})
	}
	for i, c := range canaries[:4] {
		r := remotes[i%len(remotes)]
		add(c, r, 50000+uint16(i), 443, router)
		add(r, c, 443, 50000+uint16(i), router)
		add(c, canaries[(i+1)%4], 22, 60000, router)
	}
	add(canaries[0], remotes[0], 123, 123, canaries[4]) // exporter is a subscriber
	add(remotes[0], remotes[1], 1, 2, router)           // transit
	return recs
}

// run is one pass of the privacy + logging part of the pipeline: it
// pseudonymizes the canary flows and logs about them the way stages do, and
// returns every byte it produced, by output name.
func run(t *testing.T, disable bool) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	red := privacy.NewRedactor()
	replace := red.ReplaceAttr
	if disable {
		replace = nil
	}
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: replace}))
	now := time.Date(2024, 5, 15, 12, 0, 0, 0, time.UTC)
	cfg := privacy.DefaultConfig()
	cfg.Subscribers = []string{"192.0.2.0/24", "2001:db8:1::/48"}
	cfg.KeysDir = keys
	cfg.Transit = privacy.PolicyKeep
	// Fixed keys make the pseudonyms, and so any chance hit, reproducible.
	ring, err := privacy.CreateKeyring(keys, privacy.KeyringParams{EpochLength: cfg.EpochLength, Pseudonym: cfg.Pseudonym})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := ring.EpochAt(now)
	if _, err := ring.CreateKey(e, strings.NewReader(strings.Repeat("fixed test key material!", 4))); err != nil {
		t.Fatal(err)
	}
	st, err := privacy.New(cfg, privacy.Deps{Logger: logger, Registerer: reg, Now: func() time.Time { return now }, Redactor: red})
	if err != nil {
		t.Fatal(err)
	}
	if disable {
		privacy.SetIdentityForTest(st)
	}
	recs := canaryRecords(now)
	out := st.Pseudonymize(recs, nil)
	if len(out) != len(recs) {
		t.Fatalf("%d flows out of %d", len(out), len(recs))
	}

	// Logging the way careless code would.
	for i := range recs {
		r := &recs[i]
		logger.Debug("record", "src", r.SrcAddr, "dst", r.DstAddr, "mac", r.SrcMAC, "record", *r)
		a := r.SrcAddr.Addr().Netip()
		logger.Info("flow from "+a.String(), "addr", a, "hex", fmt.Sprintf("%x", a.AsSlice()), "err", fmt.Errorf("dial %s: refused", netip.AddrPortFrom(a, 443)))
	}
	for _, p := range out {
		logger.Info("pseudo", "flow", p)
	}

	// Errors the stage returns must not quote subscriber data either.
	bad := filepath.Join(dir, "subs.txt")
	if err := os.WriteFile(bad, []byte("192.0.2.123/33\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var errs []string
	badCfg := cfg
	badCfg.SubscribersFile = bad
	if _, err := privacy.New(badCfg, privacy.Deps{}); err != nil {
		errs = append(errs, err.Error())
	}
	badCfg = cfg
	badCfg.Subscribers = []string{"2001:db8:1::c4a7/129"}
	errs = append(errs, fmt.Sprint(badCfg.Validate()))
	if _, err := ring.Reveal(e+9, out[0].Sub); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) != 3 {
		t.Fatalf("expected 3 errors, got %q", errs)
	}

	outputs := map[string][]byte{"logs.json": logs.Bytes(), "errors.txt": []byte(strings.Join(errs, "\n"))}
	js, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	outputs["flows.json"] = js
	var g bytes.Buffer
	if err := gob.NewEncoder(&g).Encode(out); err != nil {
		t.Fatal(err)
	}
	outputs["flows.gob"] = g.Bytes()
	// The flows' raw memory: every field in its binary form.
	outputs["flows.mem"] = bytes.Clone(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), len(out)*int(unsafe.Sizeof(out[0]))))
	var txt strings.Builder
	for _, p := range out {
		fmt.Fprintf(&txt, "%+v\n%v %v %v\n", p, p.Sub, p.Peer, p.Remote)
	}
	outputs["flows.txt"] = []byte(txt.String())
	// Compressed copies, as sinks and the bus write them.
	for _, name := range []string{"flows.json", "flows.mem"} {
		outputs[name+".gz"] = compress(t, "gzip", outputs[name])
		outputs[name+".zst"] = compress(t, "zstd", outputs[name])
		outputs[name+".lz4"] = compress(t, "lz4", outputs[name])
	}
	// The metrics page.
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	outputs["metrics.txt"] = rec.Body.Bytes()
	if !bytes.Contains(outputs["metrics.txt"], []byte("ccflow_privacy_flows_total")) {
		t.Fatal("metrics page misses the privacy metrics")
	}
	// Write everything to a directory and scan it from there, as the
	// pipeline test does with a run's output directory.
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range outputs {
		if err := os.WriteFile(filepath.Join(outDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return outputs
}

func compress(t *testing.T, kind string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch kind {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zstd":
		w, _ = zstd.NewWriter(&buf)
	case "lz4":
		w = lz4.NewWriter(&buf)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func scanAll(t *testing.T, outputs map[string][]byte) (map[string][]canary.Hit, int64) {
	t.Helper()
	sc := canary.NewScanner(canaries...)
	hits := map[string][]canary.Hit{}
	for name, b := range outputs {
		h, err := sc.ScanBytes(name, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) > 0 {
			hits[name] = h
		}
	}
	return hits, sc.Scanned()
}

// TestCanaryPrivacyAndLogging is privacy invariant P1's canary test at the
// privacy + logging level: canary subscriber addresses go through the
// privacy stage and a logger using its redactor; every byte produced (the
// pseudonymized flows as JSON, gob, raw memory and text, compressed copies,
// the log, error strings, the metrics page) is searched for every byte form
// of every canary: zero hits. The positive control runs the same with
// pseudonymization and redaction disabled through the test-only hook, and
// must find them, in the flows and in the log. The pipeline-level test
// (softflowd -> collector -> bus -> sinks) extends this with the same
// scanner.
func TestCanaryPrivacyAndLogging(t *testing.T) {
	outputs := run(t, false)
	hits, scanned := scanAll(t, outputs)
	for name, h := range hits {
		t.Errorf("%s: %s", name, canary.Report(h, 10))
	}
	if scanned < 10_000 {
		t.Errorf("only %d bytes scanned", scanned)
	}
	// The outputs still carry what the detector needs: remotes in the
	// clear (P5), pseudonyms present.
	if !bytes.Contains(outputs["flows.txt"], []byte("198.51.100.9")) || !bytes.Contains(outputs["logs.json"], []byte("pseudo")) {
		t.Error("outputs lost the remote addresses or the log lines")
	}

	t.Run("positive control", func(t *testing.T) {
		control, _ := scanAll(t, run(t, true))
		for _, name := range []string{"flows.json", "flows.mem", "flows.txt", "flows.json.gz", "flows.mem.zst", "flows.mem.lz4", "logs.json"} {
			if len(control[name]) == 0 {
				t.Errorf("with pseudonymization disabled, no canary found in %s", name)
			}
		}
		found := map[netip.Addr]bool{}
		for _, hs := range control {
			for _, h := range hs {
				found[h.Addr] = true
			}
		}
		for _, c := range canaries[:4] {
			if !found[c] {
				t.Errorf("positive control never found canary %v", c)
			}
		}
	})
}
