// Package detecttest holds test helpers shared by the detector's tests and
// the replay tests: loading the labelled captures of ../shared/data,
// injecting one capture into another's background, sampling, and writing
// records back as an Argus binetflow file. It is for tests only.
package detecttest

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ccflow/ccflow/collector/archive"
	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

// Load reads a capture under the shared data directory, dropping rows
// whose label contains drop (when drop is not empty).
func Load(t testing.TB, format archive.Format, drop string, path ...string) []flow.Record {
	t.Helper()
	r, err := archive.Open(testenv.Data(t, path...), format, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	recs, labels, err := archive.ReadAll(r, true)
	if err != nil {
		t.Fatal(err)
	}
	if drop == "" {
		return recs
	}
	out := recs[:0]
	for i := range recs {
		if !strings.Contains(labels[i], drop) {
			out = append(out, recs[i])
		}
	}
	return out
}

// CTU13Path is the CTU-13 scenario 11 capture, relative to the data dir.
var CTU13Path = []string{"ctu13-s11-rbot", "capture20110818-2.binetflow.gz"}

// NjRATPath is the NjRAT Zeek log, relative to the data dir.
var NjRATPath = []string{"njrat-zeek", "labeled-conn.log.gz"}

// AresPath is the CIC-IDS2017 Ares CSV, relative to the data dir.
var AresPath = []string{"cicids2017-ares", "Botnet_736.csv"}

// CTU13 returns CTU-13 scenario 11, with or without its botnet flows
// (labels containing "Botnet").
func CTU13(t testing.TB, withBotnet bool) []flow.Record {
	drop := "Botnet"
	if withBotnet {
		drop = ""
	}
	return Load(t, archive.FormatBinetflow, drop, CTU13Path...)
}

// NjRAT returns the NjRAT capture (timestamps relative to its start).
func NjRAT(t testing.TB) []flow.Record { return Load(t, archive.FormatZeek, "", NjRATPath...) }

// Ares returns the Ares botnet flows of CIC-IDS2017.
func Ares(t testing.TB) []flow.Record { return Load(t, archive.FormatCICFlowMeter, "", AresPath...) }

// Addr parses an address into a flow.Addr.
func Addr(s string) flow.Addr { return flow.AddrFrom(netip.MustParseAddr(s)) }

// Span returns the earliest and latest start of recs.
func Span(recs []flow.Record) (lo, hi int64) {
	lo, hi = recs[0].TimeStartMs, recs[0].TimeStartMs
	for _, r := range recs {
		lo, hi = min(lo, r.TimeStartMs), max(hi, r.TimeStartMs)
	}
	return lo, hi
}

// Inject remaps the addresses of recs (old → new, both sides), shifts
// their times by shift ms, and keeps the records that then start within
// [lo, hi].
func Inject(recs []flow.Record, remap map[string]string, shift, lo, hi int64) []flow.Record {
	m := map[flow.Addr]flow.Addr{}
	for k, v := range remap {
		m[Addr(k)] = Addr(v)
	}
	var out []flow.Record
	for _, r := range recs {
		r.TimeStartMs += shift
		r.TimeEndMs += shift
		r.TimeReceivedMs += shift
		if r.TimeStartMs < lo || r.TimeStartMs > hi {
			continue
		}
		if n, ok := m[r.SrcAddr.Addr()]; ok {
			r.SrcAddr = flow.RawAddr(n)
		}
		if n, ok := m[r.DstAddr.Addr()]; ok {
			r.DstAddr = flow.RawAddr(n)
		}
		out = append(out, r)
	}
	return out
}

// AresBots maps the five Ares bots into the CTU-13 subscriber prefix
// 147.32.0.0/16, to addresses that do not occur in the CTU-13 capture.
var AresBots = map[string]string{
	"192.168.10.5": "147.32.99.5", "192.168.10.8": "147.32.99.8", "192.168.10.9": "147.32.99.9",
	"192.168.10.14": "147.32.99.14", "192.168.10.15": "147.32.99.15",
}

// NjRATHost maps the NjRAT-infected host into 147.32.0.0/16.
var NjRATHost = map[string]string{"192.168.1.115": "147.32.98.115"}

// AresInCTU13 is the Ares fan-in injected into the CTU-13 background bg,
// the bots remapped by AresBots. With clip, Ares's last 16 minutes (from
// 13:45:50, when all five bots run) are shifted onto the 16 minutes of the
// background and the rest is dropped (the acceptance test); without, the
// whole hour is shifted to begin with the background (the sampling study,
// where 16 minutes at 1:10 leave a handful of flows per bot).
func AresInCTU13(t testing.TB, bg []flow.Record, clip bool) []flow.Record {
	lo, hi := Span(bg)
	a := Ares(t)
	if !clip {
		alo, _ := Span(a)
		return Inject(a, AresBots, lo-alo, lo, math.MaxInt64)
	}
	from := time.Date(2017, 7, 7, 13, 45, 50, 0, time.UTC).UnixMilli()
	return Inject(a, AresBots, lo-from, lo, hi)
}

// NjRATInCTU13 is the NjRAT capture injected likewise: the infected host
// remapped by NjRATHost and the capture's first flow shifted onto the
// start of the background; with clip, flows after the background's end are
// dropped, without, all 50 minutes are kept.
func NjRATInCTU13(t testing.TB, bg []flow.Record, clip bool) []flow.Record {
	lo, hi := Span(bg)
	nj := NjRAT(t)
	nlo, _ := Span(nj)
	if !clip {
		hi = math.MaxInt64
	}
	return Inject(nj, NjRATHost, lo-nlo, lo, hi)
}

// Sample thins records 1:n with a seeded generator and marks them 1:n
// sampled, exactly as `ccflow replay --sample n --seed seed` does for a
// single file (replay seeds one generator per file; the first file's is
// this one).
func Sample(recs []flow.Record, n int, seed uint64) []flow.Record {
	if n <= 1 {
		return recs
	}
	r := rand.New(rand.NewPCG(seed, 0x5a5a))
	var out []flow.Record
	for _, rec := range recs {
		if r.IntN(n) == 0 {
			rec.SamplingRate = max(1, rec.SamplingRate) * uint32(n)
			out = append(out, rec)
		}
	}
	return out
}

// WriteBinetflow writes records as an Argus binetflow CSV (the format of
// CTU-13) with the given label on every row.
func WriteBinetflow(w io.Writer, recs []flow.Record, label string) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label")
	for _, r := range recs {
		start := time.UnixMilli(r.TimeStartMs).UTC()
		fmt.Fprintf(bw, "%s,%.3f,%s,%s,%d,   ->,%s,%d,CON,0,0,%d,%d,%d,%s\n",
			start.Format("2006/01/02 15:04:05.000000"), float64(r.TimeEndMs-r.TimeStartMs)/1000,
			flow.IPProto(r.Proto), r.SrcAddr.Addr(), r.SrcPort, r.DstAddr.Addr(), r.DstPort,
			r.Packets, r.Bytes, r.Bytes, label)
	}
	return bw.Flush()
}
