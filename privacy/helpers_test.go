package privacy

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
)

// testNow is the fixed "now" of the tests.
var testNow = time.Date(2024, 5, 15, 12, 0, 0, 0, time.UTC)

func testConfig(dir string) Config {
	cfg := DefaultConfig()
	cfg.Subscribers = []string{"192.0.2.0/24", "2001:db8:1::/48", "10.0.0.0/8"}
	cfg.KeysDir = dir
	return cfg
}

// seededRand returns a deterministic key source.
func seededRand(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

type stageOpts struct {
	mutate func(*Config)
	reg    prometheus.Registerer
	now    func() time.Time
}

// newTestStage returns a stage on a fresh key directory holding a
// deterministic key for the epoch of testNow.
func newTestStage(t testing.TB, o stageOpts) (*Stage, string) {
	t.Helper()
	dir := t.TempDir() + "/keys"
	cfg := testConfig(dir)
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	ring, err := CreateKeyring(dir, KeyringParams{EpochLength: cfg.EpochLength, Pseudonym: cfg.Pseudonym})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := ring.EpochAt(testNow)
	if _, err := ring.CreateKey(e, seededRand(1)); err != nil {
		t.Fatal(err)
	}
	if o.now == nil {
		o.now = func() time.Time { return testNow }
	}
	if o.reg == nil {
		o.reg = prometheus.NewRegistry()
	}
	s, err := New(cfg, Deps{Registerer: o.reg, Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s, dir
}

func raw(s string) flow.RawAddr { return flow.RawAddr(netip.MustParseAddr(s).As16()) }

func addr(s string) flow.Addr { return flow.AddrFrom(netip.MustParseAddr(s)) }

// rec returns a record from src to dst at testNow.
func rec(src string, sport uint16, dst string, dport uint16) flow.Record {
	return flow.Record{
		TimeStartMs: testNow.UnixMilli(), TimeEndMs: testNow.UnixMilli() + 1000, TimeReceivedMs: testNow.UnixMilli() + 2000,
		Protocol: flow.ProtocolIPFIX, Exporter: addr("203.0.113.1"), ObsDomain: 7, InIf: 3, OutIf: 4,
		SrcAddr: raw(src), DstAddr: raw(dst), SrcPort: sport, DstPort: dport, Proto: 6, TCPFlags: 0x12,
		Bytes: 1500, Packets: 3, SamplingRate: 100, Direction: flow.DirectionIngress,
		SrcMAC: flow.MAC{1, 2, 3, 4, 5, 6}, DstMAC: flow.MAC{6, 5, 4, 3, 2, 1}, VLAN: 42,
		PostNATSrcPort: 40000, PostNATDstPort: 40001,
	}
}

// newTextLogger returns a debug-level text logger on w with replace as its
// ReplaceAttr.
func newTextLogger(w io.Writer, replace func([]string, slog.Attr) slog.Attr) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: replace}))
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
