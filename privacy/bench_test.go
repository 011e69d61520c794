package privacy

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
)

// writePrefixFile writes n random subscriber prefixes (3/4 IPv4 /16../28,
// 1/4 IPv6 /32../64 in 2000::/3), one per line with comments and blank
// lines mixed in, and returns the file and the prefixes.
func writePrefixFile(t testing.TB, n int) (string, []netip.Prefix) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	path := filepath.Join(t.TempDir(), "subscribers.txt")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "# subscriber prefixes")
	pfx := make([]netip.Prefix, 0, n)
	for len(pfx) < n {
		var p netip.Prefix
		if r.IntN(4) == 0 {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			b[0] = 0x20 | b[0]&0x1f
			p = netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(33)).Masked()
		} else {
			var b [4]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			p = netip.PrefixFrom(netip.AddrFrom4(b), 16+r.IntN(13)).Masked()
		}
		pfx = append(pfx, p)
		fmt.Fprintf(w, "%s  # line %d\n", p, len(pfx))
		if len(pfx)%1000 == 0 {
			fmt.Fprintln(w)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, pfx
}

// randomIn returns a random address inside p.
func randomIn(r *rand.Rand, p netip.Prefix) flow.RawAddr {
	a := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 96
	}
	for i := off + p.Bits(); i < 128; i++ {
		if r.IntN(2) == 1 {
			a[i/8] |= 1 << (7 - i%8)
		}
	}
	return flow.RawAddr(a)
}

// randomRemote returns a random IPv4 address outside the subscriber set.
func randomRemote(r *rand.Rand, s *Subscribers) flow.RawAddr {
	for {
		a := netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		if !s.Contains(a) {
			return flow.RawAddr(a.As16())
		}
	}
}

func TestLoad100kPrefixFile(t *testing.T) {
	path, pfx := writePrefixFile(t, 100_000)
	start := time.Now()
	s, err := LoadSubscribers(Config{SubscribersFile: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d prefixes in %v", s.Len(), time.Since(start))
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 1000; i++ {
		p := pfx[r.IntN(len(pfx))]
		a := randomIn(r, p)
		if !s.contains16((*[16]byte)(&a)) {
			t.Fatalf("an address in %v is not a subscriber", p)
		}
	}
}

// BenchmarkPseudonymize measures classify + pseudonymize per flow with 100k
// subscriber prefixes loaded, in batches of 1024 flows on one goroutine.
// Run per core: go test -run '^$' -bench Pseudonymize -cpu 1 ./privacy
func BenchmarkPseudonymize(b *testing.B) {
	path, pfx := writePrefixFile(b, 100_000)
	r := rand.New(rand.NewPCG(5, 6))
	const batch = 1024
	for _, tc := range []struct {
		name string
		mode string
		kind func(i int) string // "out", "in", "both", "transit"
	}{
		{"one-side/aes-128", ModeAES128, func(i int) string { return []string{"out", "in"}[i%2] }},
		{"both-sides/aes-128", ModeAES128, func(int) string { return "both" }},
		{"both-sides/aes-256", ModeAES256, func(int) string { return "both" }},
		{"mixed/aes-128", ModeAES128, func(i int) string { return []string{"out", "in", "out", "in", "out", "in", "both", "transit"}[i%8] }},
		{"transit-dropped", ModeAES128, func(int) string { return "transit" }},
		{"one-side/cryptopan", ModeCryptoPAn, func(i int) string { return []string{"out", "in"}[i%2] }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "keys")
			cfg := DefaultConfig()
			cfg.SubscribersFile = path
			cfg.KeysDir = dir
			cfg.Pseudonym = tc.mode
			s, err := New(cfg, Deps{Registerer: prometheus.NewRegistry(), Now: func() time.Time { return testNow }})
			if err != nil {
				b.Fatal(err)
			}
			recs := make([]flow.Record, batch)
			for i := range recs {
				rec := rec("192.0.2.7", 50000, "198.51.100.9", 443)
				sub := func() flow.RawAddr { return randomIn(r, pfx[r.IntN(len(pfx))]) }
				switch tc.kind(i) {
				case "out":
					rec.SrcAddr, rec.DstAddr = sub(), randomRemote(r, s.subs)
				case "in":
					rec.SrcAddr, rec.DstAddr = randomRemote(r, s.subs), sub()
				case "both":
					rec.SrcAddr, rec.DstAddr = sub(), sub()
				case "transit":
					rec.SrcAddr, rec.DstAddr = randomRemote(r, s.subs), randomRemote(r, s.subs)
				}
				recs[i] = rec
			}
			out := s.Pseudonymize(recs, nil)
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				out = s.Pseudonymize(recs, out[:0])
			}
			el, cpu := time.Since(start), cpuTime()-cpu0
			flows := float64(b.N) * batch
			b.ReportMetric(float64(el.Nanoseconds())/flows, "ns/flow")
			b.ReportMetric(flows/el.Seconds(), "flows/s")
			// CPU time per flow: what one core costs, even when other
			// processes share the machine and stretch the wall time.
			b.ReportMetric(float64(cpu.Nanoseconds())/flows, "cpu-ns/flow")
		})
	}
}

// cpuTime returns the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkComponents splits the per-flow cost of the both-sides case into
// its parts on the same 1024 records: the two trie lookups, and the two AES
// blocks.
func BenchmarkComponents(b *testing.B) {
	path, pfx := writePrefixFile(b, 100_000)
	subs, err := LoadSubscribers(Config{SubscribersFile: path})
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	recs := make([]flow.Record, 1024)
	for i := range recs {
		recs[i].SrcAddr = randomIn(r, pfx[r.IntN(len(pfx))])
		recs[i].DstAddr = randomIn(r, pfx[r.IntN(len(pfx))])
	}
	out := make([]flow.Pseudo, len(recs))
	c := mustCipher(b, ModeAES128, 1)
	b.Run("lookup-x2", func(b *testing.B) {
		n := 0
		for i := 0; i < b.N; i++ {
			for j := range recs {
				if subs.contains16((*[16]byte)(&recs[j].SrcAddr)) && subs.contains16((*[16]byte)(&recs[j].DstAddr)) {
					n++
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/flow")
		if n == 0 {
			b.Fatal("no subscriber found")
		}
	})
	b.Run("aes-x2", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j := range recs {
				c.pseudonymize(&out[j].Sub, (*[16]byte)(&recs[j].SrcAddr))
				c.pseudonymize(&out[j].Peer, (*[16]byte)(&recs[j].DstAddr))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/flow")
	})
}
