package privacy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
)

// pseudo returns the expected pseudonym of address a in the stage's epoch
// of testNow.
func pseudo(t *testing.T, s *Stage, a string) flow.Pseudonym {
	t.Helper()
	e, err := s.EpochAt(testNow)
	if err != nil {
		t.Fatal(err)
	}
	c := s.keys.Load().byEpoch[e]
	if c == nil {
		t.Fatalf("no key for epoch %d", e)
	}
	var p flow.Pseudonym
	src := [16]byte(raw(a))
	c.pseudonymize(&p, &src)
	return p
}

func TestPseudonymizeRoles(t *testing.T) {
	s, _ := newTestStage(t, stageOpts{mutate: func(c *Config) { c.Transit = PolicyKeep }})
	epoch, _ := s.EpochAt(testNow)
	base := func(kind flow.Kind, dir flow.Dir) flow.Pseudo {
		return flow.Pseudo{
			TimeStartMs: testNow.UnixMilli(), TimeEndMs: testNow.UnixMilli() + 1000,
			Protocol: flow.ProtocolIPFIX, Exporter: addr("203.0.113.1"), ObsDomain: 7, InIf: 3, OutIf: 4,
			Kind: kind, Direction: dir, Epoch: epoch, Proto: 6, TCPFlags: 0x12, Bytes: 1500, Packets: 3, SamplingRate: 100,
		}
	}
	tests := []struct {
		name string
		rec  flow.Record
		want func() flow.Pseudo
	}{
		{"outbound v4", rec("192.0.2.7", 443, "198.51.100.9", 8443), func() flow.Pseudo {
			p := base(flow.KindSubscriber, flow.DirOutbound)
			p.Sub, p.SubPort, p.Remote, p.RemotePort = pseudo(t, s, "192.0.2.7"), 443, addr("198.51.100.9"), 8443
			return p
		}},
		{"inbound v4, ephemeral subscriber port zeroed", rec("198.51.100.9", 53, "192.0.2.7", 50123), func() flow.Pseudo {
			p := base(flow.KindSubscriber, flow.DirInbound)
			p.Sub, p.SubPort, p.Remote, p.RemotePort = pseudo(t, s, "192.0.2.7"), 0, addr("198.51.100.9"), 53
			return p
		}},
		{"outbound v6", rec("2001:db8:1::7", 1023, "2001:db8:ffff::1", 443), func() flow.Pseudo {
			p := base(flow.KindSubscriber, flow.DirOutbound)
			p.Sub, p.SubPort, p.Remote, p.RemotePort = pseudo(t, s, "2001:db8:1::7"), 1023, addr("2001:db8:ffff::1"), 443
			return p
		}},
		{"both subscribers", rec("192.0.2.7", 22, "2001:db8:1::8", 40000), func() flow.Pseudo {
			p := base(flow.KindBoth, flow.DirOutbound)
			p.Sub, p.SubPort, p.Peer, p.PeerPort = pseudo(t, s, "192.0.2.7"), 22, pseudo(t, s, "2001:db8:1::8"), 0
			return p
		}},
		{"transit kept", rec("198.51.100.9", 1234, "198.51.100.10", 80), func() flow.Pseudo {
			p := base(flow.KindTransit, flow.DirUnknown)
			p.Epoch = 0
			p.Remote, p.RemotePort, p.TransitSrc, p.TransitSrcPort = addr("198.51.100.10"), 80, addr("198.51.100.9"), 1234
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.Pseudonymize([]flow.Record{tt.rec}, nil)
			if diff := cmp.Diff([]flow.Pseudo{tt.want()}, got); diff != "" {
				t.Errorf("Pseudonymize (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPseudonymizeMinimization(t *testing.T) {
	icmp := rec("198.51.100.9", 0, "192.0.2.7", 3<<8|1)
	icmp.Proto = 1
	tests := []struct {
		name    string
		mutate  func(*Config)
		rec     flow.Record
		subPort uint16
		inIf    uint32
		outIf   uint32
	}{
		{"coarsen keeps service port", nil, rec("192.0.2.7", 80, "198.51.100.9", 5000), 80, 3, 4},
		{"coarsen zeroes ephemeral port", nil, rec("192.0.2.7", 1024, "198.51.100.9", 443), 0, 3, 4},
		{"coarsen keeps ICMP type/code", nil, icmp, 3<<8 | 1, 3, 4},
		{"service_port_max raised", func(c *Config) { c.ServicePortMax = 8080 }, rec("192.0.2.7", 8080, "198.51.100.9", 5000), 8080, 3, 4},
		{"keep ports", func(c *Config) { c.SubscriberPorts = PolicyKeep }, rec("192.0.2.7", 50123, "198.51.100.9", 443), 50123, 3, 4},
		{"drop ports", func(c *Config) { c.SubscriberPorts = PolicyDrop }, rec("192.0.2.7", 80, "198.51.100.9", 443), 0, 3, 4},
		{"drop interfaces", func(c *Config) { c.Interfaces = PolicyDrop }, rec("192.0.2.7", 80, "198.51.100.9", 443), 80, 0, 0},
		{"coarsen interfaces", func(c *Config) { c.Interfaces, c.InterfaceMax = PolicyCoarsen, 3 }, rec("192.0.2.7", 80, "198.51.100.9", 443), 80, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestStage(t, stageOpts{mutate: tt.mutate})
			got := s.Pseudonymize([]flow.Record{tt.rec}, nil)
			if len(got) != 1 {
				t.Fatalf("got %d flows, want 1", len(got))
			}
			if got[0].SubPort != tt.subPort || got[0].InIf != tt.inIf || got[0].OutIf != tt.outIf {
				t.Errorf("SubPort, InIf, OutIf = %d, %d, %d; want %d, %d, %d", got[0].SubPort, got[0].InIf, got[0].OutIf, tt.subPort, tt.inIf, tt.outIf)
			}
		})
	}
}

func TestExporterInSubscriberSpaceIsRemoved(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, _ := newTestStage(t, stageOpts{reg: reg})
	r := rec("192.0.2.7", 80, "198.51.100.9", 443)
	r.Exporter = addr("192.0.2.1") // a CPE exporting NetFlow is a subscriber
	r2 := rec("192.0.2.8", 80, "198.51.100.9", 443)
	got := s.Pseudonymize([]flow.Record{r, r2}, nil)
	if !got[0].Exporter.IsZero() {
		t.Error("subscriber exporter address was kept")
	}
	if got[1].Exporter != addr("203.0.113.1") {
		t.Errorf("router exporter address lost: %v", got[1].Exporter)
	}
	if n := testutil.ToFloat64(s.m.exporters); n != 1 {
		t.Errorf("exporters_redacted_total = %v, want 1", n)
	}
}

func TestPseudonymizeDropsAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, dir := newTestStage(t, stageOpts{reg: reg, mutate: func(c *Config) { c.CreateKeys = false }})
	ring, err := OpenKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	cur, _ := ring.EpochAt(testNow)
	old := rec("192.0.2.7", 80, "198.51.100.9", 443)
	old.TimeStartMs = ring.EpochStart(cur - 3).UnixMilli() // no key, creation off
	future := rec("192.0.2.7", 80, "198.51.100.9", 443)
	future.TimeStartMs = ring.EpochStart(cur + 5).UnixMilli()
	before := rec("192.0.2.7", 80, "198.51.100.9", 443)
	before.TimeStartMs = DefaultOrigin.UnixMilli() - 1
	recs := []flow.Record{
		rec("192.0.2.7", 80, "198.51.100.9", 443),
		rec("198.51.100.1", 80, "198.51.100.9", 443), // transit, dropped by default
		old, future, before,
		rec("192.0.2.7", 80, "192.0.2.8", 443),
	}
	got := s.Pseudonymize(recs, nil)
	if len(got) != 2 {
		t.Fatalf("got %d flows, want 2", len(got))
	}
	want := `
		# HELP ccflow_privacy_flows_dropped_total Flows dropped by the privacy stage, by reason (transit policy, time before the key origin, destroyed epoch, epoch too far in the future, no key).
		# TYPE ccflow_privacy_flows_dropped_total counter
		ccflow_privacy_flows_dropped_total{reason="before_origin"} 1
		ccflow_privacy_flows_dropped_total{reason="destroyed_epoch"} 0
		ccflow_privacy_flows_dropped_total{reason="future_epoch"} 1
		ccflow_privacy_flows_dropped_total{reason="no_key"} 1
		ccflow_privacy_flows_dropped_total{reason="transit"} 1
		# HELP ccflow_privacy_flows_total Flows that left the privacy stage pseudonymized, by kind (subscriber, both, transit).
		# TYPE ccflow_privacy_flows_total counter
		ccflow_privacy_flows_total{kind="both"} 1
		ccflow_privacy_flows_total{kind="subscriber"} 1
		ccflow_privacy_flows_total{kind="transit"} 0
	`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ccflow_privacy_flows_total", "ccflow_privacy_flows_dropped_total"); err != nil {
		t.Error(err)
	}
}

func TestEpochFromTimes(t *testing.T) {
	s, _ := newTestStage(t, stageOpts{})
	cur, _ := s.EpochAt(testNow)
	next := testNow.Add(s.ring.params.EpochLength)
	r := rec("192.0.2.7", 80, "198.51.100.9", 443)
	byStart := r
	byStart.TimeStartMs = next.UnixMilli()
	byReceived := r
	byReceived.TimeStartMs, byReceived.TimeReceivedMs = 0, next.UnixMilli()
	byNow := r
	byNow.TimeStartMs, byNow.TimeReceivedMs = 0, 0
	got := s.Pseudonymize([]flow.Record{r, byStart, byReceived, byNow}, nil)
	var epochs []uint32
	for _, p := range got {
		epochs = append(epochs, p.Epoch)
	}
	if diff := cmp.Diff([]uint32{cur, cur + 1, cur + 1, cur}, epochs); diff != "" {
		t.Errorf("epochs (-want +got):\n%s", diff)
	}
	// Different epochs: same subscriber, unlinkable pseudonyms.
	if got[0].Sub == got[1].Sub {
		t.Error("the same pseudonym in two epochs")
	}
	if got[0].Sub != got[3].Sub {
		t.Error("different pseudonyms for the same address in one epoch")
	}
}

func TestNewRefusesEmptySubscribers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.KeysDir = t.TempDir() + "/keys"
	_, err := New(cfg, Deps{})
	if !errors.Is(err, ErrNoSubscribers) {
		t.Fatalf("New without prefixes: %v, want ErrNoSubscribers", err)
	}
}

func TestNewDefaultKeysDirNotice(t *testing.T) {
	state := t.TempDir()
	t.Setenv("STATE_DIRECTORY", "")
	t.Setenv("XDG_STATE_HOME", state)
	cfg := testConfig("")
	var logs strings.Builder
	s, err := New(cfg, Deps{Logger: newTextLogger(&logs, nil), Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(state, "ccflow", "keys")
	if s.KeysDir() != want {
		t.Errorf("KeysDir = %s, want %s", s.KeysDir(), want)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), want) {
		t.Errorf("no warning naming the default key directory in:\n%s", logs.String())
	}
	// The key is created on first use.
	out := s.Pseudonymize([]flow.Record{rec("192.0.2.7", 80, "198.51.100.9", 443)}, nil)
	if len(out) != 1 || out[0].Sub.IsZero() {
		t.Fatalf("no pseudonymized flow: %+v", out)
	}
	if !strings.Contains(logs.String(), "created epoch key") {
		t.Errorf("key creation not logged:\n%s", logs.String())
	}
	fi, err := os.Stat(want)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("default key directory: %v, mode %v", err, fi.Mode())
	}
}

func TestPseudonymizeAllocs(t *testing.T) {
	s, _ := newTestStage(t, stageOpts{mutate: func(c *Config) { c.Transit = PolicyKeep }})
	recs := []flow.Record{
		rec("192.0.2.7", 80, "198.51.100.9", 443),
		rec("198.51.100.9", 80, "2001:db8:1::7", 443),
		rec("192.0.2.7", 80, "192.0.2.8", 443),
		rec("198.51.100.1", 80, "198.51.100.9", 443),
	}
	out := s.Pseudonymize(recs, nil)
	for _, mode := range []string{ModeAES128, ModeCryptoPAn} {
		t.Run(mode, func(t *testing.T) {
			s, _ := newTestStage(t, stageOpts{mutate: func(c *Config) { c.Pseudonym = mode; c.Transit = PolicyKeep }})
			if n := testing.AllocsPerRun(100, func() { out = s.Pseudonymize(recs, out[:0]) }); n != 0 {
				t.Errorf("Pseudonymize allocates %v times per call in steady state", n)
			}
		})
	}
}

func TestPseudonymizeConcurrent(t *testing.T) {
	s, _ := newTestStage(t, stageOpts{})
	ring := s.ring
	cur, _ := ring.EpochAt(testNow)
	var wg sync.WaitGroup
	results := make([][]flow.Pseudo, 8)
	for g := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []flow.Pseudo
			for i := 0; i < 200; i++ {
				r := rec(fmt.Sprintf("192.0.2.%d", i%200+1), 80, "198.51.100.9", 443)
				// Half the flows are in the next epoch, whose key is
				// created on first use by whichever goroutine gets there.
				if i%2 == 1 {
					r.TimeStartMs = ring.EpochStart(cur + 1).UnixMilli()
				}
				out = s.Pseudonymize([]flow.Record{r}, out)
			}
			results[g] = out
		}()
	}
	wg.Wait()
	for g := 1; g < len(results); g++ {
		if diff := cmp.Diff(results[0], results[g]); diff != "" {
			t.Fatalf("goroutine %d got different pseudonyms (-0 +%d):\n%s", g, g, diff)
		}
	}
	epochs, _ := ring.Epochs()
	if diff := cmp.Diff([]uint32{cur, cur + 1}, epochs); diff != "" {
		t.Errorf("key files (-want +got):\n%s", diff)
	}
}

func TestStartReloadsDestroyedAndNewKeys(t *testing.T) {
	now := testNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, dir := newTestStage(t, stageOpts{now: clock, mutate: func(c *Config) { c.ReloadInterval = time.Second }})
	cur, _ := s.EpochAt(testNow)
	r := rec("192.0.2.7", 80, "198.51.100.9", 443)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Start creates the current and the next epoch's keys ahead of time.
	ring, _ := OpenKeyring(dir)
	if epochs, _ := ring.Epochs(); !cmp.Equal(epochs, []uint32{cur, cur + 1}) {
		t.Errorf("after Start, key files for epochs %v, want %v", epochs, []uint32{cur, cur + 1})
	}
	// Move the clock two epochs on and destroy the epoch of r.
	mu.Lock()
	now = testNow.Add(2 * s.ring.params.EpochLength)
	mu.Unlock()
	if _, err := ring.Destroy(ring.EpochStart(cur+1), clock()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := s.Pseudonymize([]flow.Record{r}, nil)
		if len(out) == 0 {
			break // dropped: the stage saw the destruction
		}
		if time.Now().After(deadline) {
			t.Fatal("the running stage still pseudonymizes a destroyed epoch")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := testutil.ToFloat64(s.m.dropped[reasonDestroyed]); n < 1 {
		t.Errorf("destroyed_epoch drops = %v", n)
	}
	if _, err := os.Stat(ring.keyPath(cur)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("destroyed key file still there: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal("second Stop:", err)
	}
}

func TestStopWithoutStart(t *testing.T) {
	s, _ := newTestStage(t, stageOpts{})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestIdentityHookOnlyInTests(t *testing.T) {
	t.Setenv(identityEnv, "1")
	s, _ := newTestStage(t, stageOpts{})
	out := s.Pseudonymize([]flow.Record{rec("192.0.2.7", 80, "198.51.100.9", 443)}, nil)
	if identity := flow.Addr(out[0].Sub) == addr("192.0.2.7"); identity != testHooks {
		t.Fatalf("with %s=1 and testHooks=%v, identity mode is %v", identityEnv, testHooks, identity)
	}
	SetIdentityForTest(s)
	out = s.Pseudonymize([]flow.Record{rec("192.0.2.7", 80, "198.51.100.9", 443)}, nil)
	if flow.Addr(out[0].Sub) != addr("192.0.2.7") {
		t.Fatal("SetIdentityForTest did not disable pseudonymization")
	}
}
