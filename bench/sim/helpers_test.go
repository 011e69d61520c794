package sim_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ccflow/ccflow/bench/sim"
)

// testStart is a fixed event start, so that tests are reproducible.
var testStart = time.Date(2026, 3, 2, 18, 0, 0, 0, time.UTC)

// testConfig is a small ISP: quick to simulate, with every kind of traffic.
func testConfig() sim.Config {
	c := sim.DefaultConfig()
	c.Start = testStart
	c.Subscribers = 200
	c.SessionInterval = 30 * time.Second
	c.IPv6Share = 0.3
	c.BeaconPeriodMin, c.BeaconPeriodMax = 30*time.Second, 90*time.Second
	return c
}

// step is one second of simulated export: records and export time.
type step struct {
	recs     []sim.Record
	exportMs int64
}

// simulate runs cfg for seconds steps and returns copies of every step.
func simulate(t testing.TB, cfg sim.Config, seconds int) []step {
	t.Helper()
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	steps := make([]step, 0, seconds)
	for range seconds {
		recs, ms := s.Next()
		steps = append(steps, step{append([]sim.Record(nil), recs...), ms})
	}
	return steps
}

// edgeRecords are hand-made records that exercise the encoders' corners:
// IPv6, UDP, one-packet flows, large counters, flags.
func edgeRecords(startMs int64) []sim.Record {
	a4 := netip.MustParseAddr("100.64.0.7")
	b4 := netip.MustParseAddr("203.0.113.9")
	a6 := netip.MustParseAddr("2001:db8:0:7::1")
	b6 := netip.MustParseAddr("3fff:0:1:2::1")
	return []sim.Record{
		{StartMs: startMs - 900, EndMs: startMs - 100, Src: a4, Dst: b4, SrcPort: 40000, DstPort: 443, Proto: sim.ProtoTCP, TCPFlags: 0x1b, Packets: 12, Bytes: 4321, InIf: 3, OutIf: 100},
		{StartMs: startMs - 500, EndMs: startMs - 500, Src: b4, Dst: a4, SrcPort: 53, DstPort: 50000, Proto: sim.ProtoUDP, Packets: 1, Bytes: 200, InIf: 100, OutIf: 3},
		{StartMs: startMs - 999, EndMs: startMs - 1, Src: a6, Dst: b6, SrcPort: 60000, DstPort: 8443, Proto: sim.ProtoTCP, TCPFlags: 0x02, Packets: 3, Bytes: 180, InIf: 4, OutIf: 100},
		{StartMs: startMs - 300, EndMs: startMs - 200, Src: b6, Dst: a6, SrcPort: 443, DstPort: 60001, Proto: sim.ProtoUDP, Packets: 7, Bytes: 7000, InIf: 100, OutIf: 4},
		{StartMs: startMs - 800, EndMs: startMs - 700, Src: a4, Dst: b4, SrcPort: 1, DstPort: 65535, Proto: sim.ProtoTCP, TCPFlags: 0xff, Packets: 40000, Bytes: 40_000_000, InIf: 0xfffffffe, OutIf: 1},
	}
}
