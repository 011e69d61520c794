package enrich

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
)

// The benchmark sources have the shape of the real free databases: an ASN
// database with 200k IPv4 and 50k IPv6 networks over 20k ASes (GeoLite2-ASN
// holds about 500k networks of 80k ASes), a country database of the same
// networks with GeoLite2-style records (names in 8 languages), and two intel
// lists with 5,000 addresses and 500 CIDRs.
const (
	benchV4Nets  = 200_000
	benchV6Nets  = 50_000
	benchASes    = 20_000
	benchIntel32 = 5_000
	benchIntelN  = 500
)

type benchSources struct {
	asn, country []byte
	intelA       string
	intelB       string
	inside       []netip.Addr   // addresses inside the databases' networks
	nets         []netip.Prefix // the databases' networks
}

var (
	benchOnce sync.Once
	benchSrc  benchSources
	benchErr  error
)

func randPrefix(r *rand.Rand, v6 bool) netip.Prefix {
	if v6 {
		var b [16]byte
		b[0] = byte(0x21 + r.IntN(14)) // avoid the aliased 2001::/32 and 2002::/16
		for i := 1; i < 6; i++ {
			b[i] = byte(r.Uint32())
		}
		return netip.PrefixFrom(netip.AddrFrom16(b), 32+r.IntN(17)).Masked()
	}
	var b [4]byte
	b[0] = byte(1 + r.IntN(222))
	b[1], b[2], b[3] = byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())
	bits := 24
	if r.IntN(4) == 0 {
		bits = 16 + r.IntN(8)
	}
	return netip.PrefixFrom(netip.AddrFrom4(b), bits).Masked()
}

func randIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if r.IntN(2) == 1 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func buildBenchSources() (benchSources, error) {
	r := rand.New(rand.NewPCG(1, 2))
	var s benchSources
	asnTree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-ASN", RecordSize: 28, IncludeReservedNetworks: true})
	if err != nil {
		return s, err
	}
	ccTree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 28, IncludeReservedNetworks: true})
	if err != nil {
		return s, err
	}
	langs := []string{"de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"}
	countries := make([]mmdbtype.Map, 250)
	for i := range countries {
		names := mmdbtype.Map{}
		for _, l := range langs {
			names[mmdbtype.String(l)] = mmdbtype.String(fmt.Sprintf("Country %d (%s)", i, l))
		}
		code := mmdbtype.String(fmt.Sprintf("%c%c", 'A'+i/26, 'A'+i%26))
		c := mmdbtype.Map{"geoname_id": mmdbtype.Uint32(1000 + i), "iso_code": code, "names": names}
		countries[i] = mmdbtype.Map{
			"continent":          mmdbtype.Map{"code": mmdbtype.String("EU"), "geoname_id": mmdbtype.Uint32(6255148), "names": names},
			"country":            c,
			"registered_country": c,
		}
	}
	ases := make([]mmdbtype.Map, benchASes)
	for i := range ases {
		ases[i] = asnRec(uint32(1000+i), fmt.Sprintf("Example Networks %d Ltd", i))
	}
	for i := 0; i < benchV4Nets+benchV6Nets; i++ {
		p := randPrefix(r, i >= benchV4Nets)
		n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := asnTree.Insert(n, ases[r.IntN(len(ases))]); err != nil {
			return s, err
		}
		if err := ccTree.Insert(n, countries[r.IntN(len(countries))]); err != nil {
			return s, err
		}
		s.nets = append(s.nets, p)
		if i%8 == 0 {
			s.inside = append(s.inside, randIn(r, p))
		}
	}
	var buf bytes.Buffer
	if _, err := asnTree.WriteTo(&buf); err != nil {
		return s, err
	}
	s.asn = bytes.Clone(buf.Bytes())
	buf.Reset()
	if _, err := ccTree.WriteTo(&buf); err != nil {
		return s, err
	}
	s.country = bytes.Clone(buf.Bytes())
	var a, b strings.Builder
	b.WriteString("# \"first_seen_utc\",\"dst_ip\",\"dst_port\"\n")
	for i := 0; i < benchIntel32; i++ {
		ip := s.inside[r.IntN(len(s.inside))]
		fmt.Fprintf(&a, "%s\n", ip)
		if i%2 == 0 {
			fmt.Fprintf(&b, "\"2026-01-01 00:00:00\",\"%s\",\"443\"\n", ip)
		}
	}
	for i := 0; i < benchIntelN; i++ {
		fmt.Fprintf(&a, "%s\n", randPrefix(r, i%5 == 0))
	}
	s.intelA, s.intelB = a.String(), b.String()
	return s, nil
}

func loadBenchSources(b *testing.B) {
	b.Helper()
	benchOnce.Do(func() {
		start := time.Now()
		benchSrc, benchErr = buildBenchSources()
		b.Logf("built benchmark sources in %v: asn %d bytes, country %d bytes", time.Since(start).Round(time.Millisecond), len(benchSrc.asn), len(benchSrc.country))
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
}

// benchConfig writes the benchmark sources to dir and returns a
// configuration that reads them, with one named exporter.
func benchConfig(b *testing.B, dir string, cacheSize int) Config {
	b.Helper()
	loadBenchSources(b)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		return p
	}
	cfg := DefaultConfig()
	cfg.Watch = false
	cfg.CacheSize = cacheSize
	cfg.ASNDB = write("asn.mmdb", benchSrc.asn)
	cfg.CountryDB = write("country.mmdb", benchSrc.country)
	cfg.Intel = []IntelList{
		{Name: "local", File: write("local.txt", []byte(benchSrc.intelA))},
		{Name: "feodo", File: write("feodo.csv", []byte(benchSrc.intelB)), Column: "dst_ip"},
	}
	cfg.Exporters = []Exporter{{Addr: "192.0.2.1", Name: "edge1", Interfaces: []Interface{{Index: 1, Name: "xe-0/0/0"}, {Index: 2, Name: "xe-0/0/1"}}}}
	return cfg
}

var benchEnrichers = map[int]*Enricher{}

// benchEnricher returns an Enricher over the benchmark sources. Enrichers
// are kept across the rounds of a benchmark (one per cache size).
func benchEnricher(b *testing.B, cacheSize int) *Enricher {
	b.Helper()
	if e := benchEnrichers[cacheSize]; e != nil {
		return e
	}
	dir, err := os.MkdirTemp("", "ccflow-enrich-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir) // the Enricher keeps what it loaded in memory
	e, err := New(benchConfig(b, dir, cacheSize), Deps{})
	if err != nil {
		b.Fatal(err)
	}
	benchEnrichers[cacheSize] = e
	return e
}

// benchAddrs returns n remote addresses cycling over distinct ones: 70%
// inside the databases' networks, the rest random, a fifth of those IPv6.
func benchAddrs(n, distinct int) []flow.Addr {
	r := rand.New(rand.NewPCG(3, 4))
	set := make([]flow.Addr, distinct)
	for i := range set {
		if r.IntN(10) < 7 {
			set[i] = flow.AddrFrom(randIn(r, benchSrc.nets[r.IntN(len(benchSrc.nets))]))
		} else {
			set[i] = flow.AddrFrom(randIn(r, randPrefix(r, r.IntN(5) == 0)))
		}
	}
	out := make([]flow.Addr, n)
	for i := range out {
		out[i] = set[i%distinct]
	}
	return out
}

// runFlows enriches b.N flows in batches of 1024, so that ns/op is the
// cost of one flow. The batch stays in the CPU cache, as it does in the
// pipeline (decoded, pseudonymized, then enriched); each round writes the
// next remote addresses from addrs into it, and that write is timed too.
func runFlows(b *testing.B, e *Enricher, addrs []flow.Addr, enrich func([]flow.Pseudo)) {
	batch := make([]flow.Pseudo, 1024)
	exp := addr("192.0.2.1")
	for i := range batch {
		batch[i] = flow.Pseudo{Exporter: exp, InIf: 1, OutIf: 2, RemotePort: 443}
	}
	b.ReportAllocs()
	hits0, lookups0 := testutil.ToFloat64(e.m.hits), testutil.ToFloat64(e.m.lookups)
	cpu0 := cpuTime()
	b.ResetTimer()
	off := 0
	for n := 0; n < b.N; n += len(batch) {
		k := min(len(batch), b.N-n)
		if off+k > len(addrs) {
			off = 0
		}
		fs := batch[:k]
		for i := range fs {
			fs[i].Remote = addrs[off+i]
		}
		enrich(fs)
		off += k
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mflows/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/flow")
	if l := testutil.ToFloat64(e.m.lookups) - lookups0; l > 0 {
		b.ReportMetric(100*(testutil.ToFloat64(e.m.hits)-hits0)/l, "hit%")
	}
}

// cpuTime is the CPU time (user and system) the process has used, in ns.
// On a shared machine it measures the cost of a flow better than the wall
// clock: time this process waits for a core is not counted.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkEnrich measures the per-flow cost (ns/op and cpu-ns/flow are
// per flow; hit% is the cache hit rate):
//
//   - hit: 4k distinct remotes, in turn, through a 64k-entry cache (the
//     cost of a hit);
//   - warm: 16k distinct remotes, in turn, through a 64k-entry cache;
//   - warm-pooled: the same through Enricher.Enrich (sync.Pool);
//   - zipf, zipf-256k: remotes drawn from 1M addresses with Zipf
//     popularity through a 64k (default) and a 256k cache;
//   - miss: 1M distinct remotes, in turn, through a 64k cache: almost
//     every lookup is a miss (three bart lookups, a cache insert);
//   - cache-off: the same with no cache;
//   - new-worker-per-batch: a new Worker (a new, empty 2.5 MB cache) for
//     every batch of 1024, the worst case.
func BenchmarkEnrich(b *testing.B) {
	b.Run("hit", func(b *testing.B) {
		e := benchEnricher(b, 1<<16)
		w := e.NewWorker()
		addrs := benchAddrs(1<<16, 4<<10)
		warmUp(addrs, w.Enrich)
		runFlows(b, e, addrs, w.Enrich)
	})
	b.Run("warm", func(b *testing.B) {
		e := benchEnricher(b, 1<<16)
		w := e.NewWorker()
		addrs := benchAddrs(1<<16, 16<<10)
		warmUp(addrs, w.Enrich)
		runFlows(b, e, addrs, w.Enrich)
	})
	b.Run("warm-pooled", func(b *testing.B) {
		e := benchEnricher(b, 1<<16)
		addrs := benchAddrs(1<<16, 16<<10)
		warmUp(addrs, e.Enrich)
		runFlows(b, e, addrs, e.Enrich)
	})
	b.Run("zipf", func(b *testing.B) {
		e := benchEnricher(b, 1<<16)
		w := e.NewWorker()
		addrs := zipfAddrs(1<<21, 1<<20)
		warmUp(addrs, w.Enrich)
		runFlows(b, e, addrs, w.Enrich)
	})
	b.Run("zipf-256k", func(b *testing.B) {
		e := benchEnricher(b, 1<<18)
		w := e.NewWorker()
		addrs := zipfAddrs(1<<21, 1<<20)
		warmUp(addrs, w.Enrich)
		runFlows(b, e, addrs, w.Enrich)
	})
	b.Run("miss", func(b *testing.B) {
		e := benchEnricher(b, 1<<16)
		runFlows(b, e, benchAddrs(1<<20, 1<<20), e.NewWorker().Enrich)
	})
	b.Run("cache-off", func(b *testing.B) {
		e := benchEnricher(b, 0)
		runFlows(b, e, benchAddrs(1<<20, 1<<20), e.NewWorker().Enrich)
	})
	b.Run("new-worker-per-batch", func(b *testing.B) {
		e := benchEnricher(b, 1<<16)
		runFlows(b, e, benchAddrs(1<<20, 1<<20), func(f []flow.Pseudo) { e.NewWorker().Enrich(f) })
	})
}

// zipfAddrs returns n addresses drawn from distinct ones with Zipf
// popularity (s=1.1), the shape of remote-endpoint popularity in ISP
// traffic: a few very popular services, a long tail.
func zipfAddrs(n, distinct int) []flow.Addr {
	set := benchAddrs(distinct, distinct)
	z := rand.NewZipf(rand.New(rand.NewPCG(5, 6)), 1.1, 1, uint64(distinct-1))
	out := make([]flow.Addr, n)
	for i := range out {
		out[i] = set[z.Uint64()]
	}
	return out
}

// warmUp enriches every address once.
func warmUp(addrs []flow.Addr, enrich func([]flow.Pseudo)) {
	fs := make([]flow.Pseudo, len(addrs))
	for i := range fs {
		fs[i].Remote = addrs[i]
	}
	enrich(fs)
}

// BenchmarkEnrichParallel is warm-pooled from GOMAXPROCS goroutines.
func BenchmarkEnrichParallel(b *testing.B) {
	e := benchEnricher(b, 1<<16)
	addrs := benchAddrs(1<<16, 16<<10)
	e.Enrich(make([]flow.Pseudo, 1))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// One op is one flow; flows go in batches of 1024.
		batch := make([]flow.Pseudo, 1024)
		n, off := 0, 0
		for pb.Next() {
			batch[n].Remote = addrs[off]
			off = (off + 1) % len(addrs)
			if n++; n == len(batch) {
				e.Enrich(batch)
				n = 0
			}
		}
	})
}

// BenchmarkLoad measures New over the benchmark sources (250k networks
// in each database, 5,500 intel entries), with and without verify_mmdb:
// the start-up cost, and the cost of reloading everything.
func BenchmarkLoad(b *testing.B) {
	for _, verify := range []bool{true, false} {
		b.Run(fmt.Sprintf("verify=%v", verify), func(b *testing.B) {
			cfg := benchConfig(b, b.TempDir(), 1<<16)
			cfg.VerifyMMDB = verify
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			var e *Enricher
			for i := 0; i < b.N; i++ {
				var err error
				if e, err = New(cfg, Deps{}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			// The heap the loaded sources keep (one Enricher; workers'
			// caches are extra: CacheSize × 40 bytes each).
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MB")
			runtime.KeepAlive(e)
		})
	}
}
