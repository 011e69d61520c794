package main

import (
	"cmp"
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
// the capture of a synthetic HTTPS beacon (a curl loop sleeping 2 s) is
// exported by Debian's softflowd as NetFlow v9 and IPFIX to the ccflow
// collector over UDP, and the decoded records go through the privacy
// stage and the detector: 141.193.213.21:443 is found with period 2 s ±
// 10%, the loop's sleep (see checkSlipsPeriod).
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
			checkSlipsPeriod(t, top.PeriodS, top.Explanation)
		})
	}
}

// slipsSchedule is the Slips beacon's schedule in test-cc-capture-1,
// measured from the packets, independently of any flow exporter or of the
// detector.
type slipsSchedule struct {
	// Start is the median gap between the first SYNs of consecutive
	// connections (start to start).
	Start float64
	// Idle is the median idle time: the first SYN of a connection minus
	// the last packet (either direction) of the previous one.
	Idle float64
}

// slipsTruth reads the schedule of the connections from 147.32.80.37 to
// 141.193.213.21:443 with tshark. The loop runs curl, then sleeps 2 s.
// 295 connections: the 294 start-to-start gaps have median 2.2044 s
// (mode 2.19 s, quartiles 2.193 and 2.220 s, shortest 2.180 s): the
// sleep plus the request (0.16-0.2 s; 40 gaps are longer than 2.25 s: 22
// of 2.3 s and 15 of 2.6-2.7 s after requests of 0.25-0.7 s, and 3 of
// 4.4 s span two beats). The 292 idle times (2
// connections, with a packet 74 and 154 s later, overlap the next ones)
// have median 2.0216 s with a median absolute deviation of 0.5 ms: the
// sleep, plus curl's start-up.
func slipsTruth(t *testing.T) slipsSchedule {
	t.Helper()
	tshark := testenv.Tool(t, "tshark")
	pcap := testenv.Data(t, "slips-test-cc", "test-cc-capture-1.pcap")
	out, err := exec.Command(tshark, "-r", pcap, "-Y", "ip.addr==141.193.213.21 && tcp.port==443 && ip.addr==147.32.80.37",
		"-T", "fields", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "tcp.srcport", "-e", "tcp.dstport",
		"-e", "tcp.flags.syn", "-e", "tcp.flags.ack").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	type conn struct{ start, end float64 }
	conns := map[string]*conn{} // by client port
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 6 {
			t.Fatalf("tshark output %q", line)
		}
		ts, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			t.Fatalf("tshark output %q: %v", line, err)
		}
		client, port := f[1] == "147.32.80.37", f[3]
		if client {
			port = f[2]
		}
		c := conns[port]
		if c == nil {
			c = &conn{start: -1}
			conns[port] = c
		}
		// The first SYN opens the connection (a retransmitted SYN does
		// not open another); the last packet closes it.
		if client && f[4] == "1" && f[5] == "0" && c.start < 0 {
			c.start = ts
		}
		c.end = max(c.end, ts)
	}
	var cs []conn
	for _, c := range conns {
		if c.start >= 0 {
			cs = append(cs, *c)
		}
	}
	slices.SortFunc(cs, func(a, b conn) int { return cmp.Compare(a.start, b.start) })
	var gaps, idle []float64
	for i := 1; i < len(cs); i++ {
		gaps = append(gaps, cs[i].start-cs[i-1].start)
		if g := cs[i].start - cs[i-1].end; g > 0 {
			idle = append(idle, g)
		}
	}
	if len(gaps) < 100 || len(idle) < len(gaps)*3/4 {
		t.Fatalf("tshark found %d connections, %d idle times", len(cs), len(idle))
	}
	return slipsSchedule{Start: median(gaps), Idle: median(idle)}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + m) / 2
	}
	return m
}

// checkSlipsPeriod checks the period the detector reports for the Slips
// beacon against issue 4's acceptance, "2 s ± 10%", and against the
// schedule measured from the packets (slipsTruth). The beacon is a sleep
// loop: its start-to-start period, 2.204 s, is the 2 s sleep plus the
// request, outside the band; the idle time between connections,
// 2.022 s, is the loop's sleep. The detector reports the idle time when it
// is clearly more regular than the start gaps and says so ("sleep loop")
// in the explanation; the period must then be within 2% of the measured
// idle time. A start-to-start period would have to be within 1% of the
// measured one, and fails the band.
func checkSlipsPeriod(t *testing.T, got float64, explanation string) {
	t.Helper()
	truth := slipsTruth(t)
	t.Logf("period %.3f s; measured from the packets: %.4f s start to start, %.4f s idle", got, truth.Start, truth.Idle)
	if truth.Start < 2.18 || truth.Start > 2.23 || truth.Idle < 2.0 || truth.Idle > 2.05 {
		t.Errorf("measured %.4f s start to start and %.4f s idle, want 2.18-2.23 s and 2.0-2.05 s (the capture changed?)", truth.Start, truth.Idle)
	}
	if strings.Contains(explanation, "sleep loop") {
		if math.Abs(got-truth.Idle) > 0.02*truth.Idle {
			t.Errorf("sleep loop with period %.3f s, want %.4f s ± 2%% (the packets' median idle time)", got, truth.Idle)
		}
	} else if math.Abs(got-truth.Start) > 0.01*truth.Start {
		t.Errorf("start-to-start period %.3f s, want %.4f s ± 1%% (the packets' median gap)", got, truth.Start)
	}
	if got < 1.8 || got > 2.2 {
		t.Errorf("period %.3f s, want 2 s ± 10%% (issue 4); explanation: %s", got, explanation)
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
