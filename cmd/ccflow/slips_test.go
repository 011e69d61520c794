package main

import (
	"context"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/collector"
	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy"
	"github.com/ccflow/ccflow/testenv"
)

// keepRecords is a collector.Handler that copies every record.
type keepRecords struct {
	mu   sync.Mutex
	recs []flow.Record
}

func (k *keepRecords) HandleFlows(_ int, recs []flow.Record) {
	k.mu.Lock()
	k.recs = append(k.recs, recs...)
	k.mu.Unlock()
}

func (k *keepRecords) snapshot() []flow.Record {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]flow.Record(nil), k.recs...)
}

// TestSlipsThroughRealExportPath is the Slips acceptance test of issue 4:
// the capture of a synthetic HTTPS beacon (curl every 2 s) is exported by
// Debian's softflowd as NetFlow v9 to the ccflow collector over UDP, and
// the decoded records go through the privacy stage and the detector.
func TestSlipsThroughRealExportPath(t *testing.T) {
	softflowd := testenv.Tool(t, "softflowd")
	pcap := testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap")
	for _, version := range []int{9, 10} {
		t.Run("softflowd -v "+strconv.Itoa(version), func(t *testing.T) {
			h := &keepRecords{}
			ccfg := collector.DefaultConfig()
			ccfg.NetFlow.Addr, ccfg.IPFIX.Addr, ccfg.SFlow.Addr = "127.0.0.1:0", "127.0.0.1:0", ""
			c, err := collector.New(ccfg, collector.Deps{Handler: h, Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Stop() }()
			listener := "netflow"
			if version == 10 {
				listener = "ipfix"
			}
			to := c.Addrs()[listener]
			if out, err := exec.Command(softflowd, "-r", pcap, "-n", to.String(), "-v", strconv.Itoa(version)).CombinedOutput(); err != nil {
				t.Fatalf("softflowd: %v\n%s", err, out)
			}
			// softflowd reports 594 flows for this capture (see
			// collector/archive's nfcapd test).
			deadline := time.Now().Add(10 * time.Second)
			for len(h.snapshot()) < 594 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			recs := h.snapshot()
			if len(recs) < 594 {
				t.Fatalf("collector decoded %d flows, want 594", len(recs))
			}
			// softflowd -r derives flow times from the capture through the
			// exporter's uptime, which can put them in the future, where the
			// privacy stage has no keys; shift them by a constant to a past
			// date (intervals are unchanged).
			shiftToPast(recs, time.Date(2020, 1, 6, 10, 0, 0, 0, time.UTC))

			pcfg := privacy.DefaultConfig()
			pcfg.Subscribers = []string{"147.32.80.37/32"}
			pcfg.KeysDir = filepath.Join(t.TempDir(), "keys")
			priv, err := privacy.New(pcfg, privacy.Deps{Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			allow, _ := detect.NewBuiltinAllowlist(detect.DefaultConfig().Allowlists.Builtin)
			det, err := detect.New(detect.DefaultConfig(), detect.Deps{Allowlist: allow})
			if err != nil {
				t.Fatal(err)
			}
			det.Observe(priv.Pseudonymize(recs, nil))
			det.Flush()
			var top *flow.Candidate
			for _, r := range det.Results() {
				for i := range r.Candidates {
					c := &r.Candidates[i]
					if c.RemoteAddr.String() == "141.193.213.21" && c.RemotePort == 443 && (top == nil || c.Score > top.Score) {
						top = c
					}
				}
			}
			if top == nil {
				t.Fatal("141.193.213.21:443 is not a candidate")
			}
			t.Logf("%.3f %s", top.Score, top.Explanation)
			checkSlipsPeriod(t, top.PeriodS)
		})
	}
}

// slipsTruth is the beacon's period in test-cc-capture-1 measured from the
// packets, independently of any flow exporter or of the detector: the
// median gap between the first SYNs of consecutive connections from
// 147.32.80.37 to 141.193.213.21:443, read with tshark. (294 gaps: median
// 2.2044 s, mode 2.19 s, quartiles 2.193 and 2.220 s, shortest 2.180 s;
// 14% of the requests were slow, 2.6-2.7 s, and 3 gaps of 4.4 s span two
// beats. The loop sleeps 2 s, then curl connects and makes its request.)
func slipsTruth(t *testing.T) float64 {
	t.Helper()
	tshark := testenv.Tool(t, "tshark")
	pcap := testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap")
	out, err := exec.Command(tshark, "-r", pcap, "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0 && ip.dst==141.193.213.21 && tcp.dstport==443",
		"-T", "fields", "-e", "frame.time_epoch", "-e", "tcp.srcport").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	seen := map[string]bool{}
	var starts []float64
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		ts, port, ok := strings.Cut(line, "\t")
		if !ok || seen[port] { // a retransmitted SYN is not a new connection
			continue
		}
		seen[port] = true
		v, err := strconv.ParseFloat(ts, 64)
		if err != nil {
			t.Fatalf("tshark output %q: %v", line, err)
		}
		starts = append(starts, v)
	}
	slices.Sort(starts)
	var gaps []float64
	for i := 1; i < len(starts); i++ {
		gaps = append(gaps, starts[i]-starts[i-1])
	}
	if len(gaps) < 100 {
		t.Fatalf("tshark found %d connections", len(starts))
	}
	slices.Sort(gaps)
	m := gaps[len(gaps)/2]
	if len(gaps)%2 == 0 {
		m = (gaps[len(gaps)/2-1] + m) / 2
	}
	return m
}

// checkSlipsPeriod checks the period the detector reports for the Slips
// beacon. Issue 4 asks for "2 s ± 10%", i.e. at most 2.2 s; the capture's
// true period, measured from its packets (slipsTruth), is 2.204 s: the 2 s
// sleep plus the request. No estimator of the period (the median, the
// interquartile mean) lands inside the band on this capture, so
// the test holds the estimate to 1% of the measured period instead, a
// band a fifth as wide as the (docs/detection.md records the
// evidence).
func checkSlipsPeriod(t *testing.T, got float64) {
	t.Helper()
	truth := slipsTruth(t)
	t.Logf("period %.3f s; measured from the packets: %.4f s", got, truth)
	if got > 2.2 {
		t.Logf("outside issue 4's 2 s ± 10%% by %.3f s, as is the measured period (by %.4f s)", got-2.2, truth-2.2)
	}
	if truth < 2.18 || truth > 2.23 {
		t.Errorf("measured period %.4f s, want 2.18-2.23 s (the capture changed?)", truth)
	}
	if math.Abs(got-truth) > 0.01*truth {
		t.Errorf("period %.3f s, want %.4f s ± 1%% (the packets' median gap)", got, truth)
	}
}

func shiftToPast(recs []flow.Record, at time.Time) {
	lo := recs[0].TimeStartMs
	for _, r := range recs {
		lo = min(lo, r.TimeStartMs)
	}
	d := at.UnixMilli() - lo
	for i := range recs {
		recs[i].TimeStartMs += d
		recs[i].TimeEndMs += d
		recs[i].TimeReceivedMs += d
	}
}
