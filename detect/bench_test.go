package detect_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ccflow/ccflow/detect"
	"github.com/ccflow/ccflow/flow"
)

// population is a synthetic subscriber population: subscribers call
// remote endpoints drawn from a skewed popularity distribution (a few
// endpoints are called by many subscribers), with a few flows per pair on
// average and some chatty or beaconing pairs.
type population struct {
	subs, eps int
	r         *rand.Rand
	z         *rand.Zipf
}

func newPopulation(subs, eps int, seed uint64) *population {
	r := rand.New(rand.NewPCG(seed, 42))
	return &population{subs: subs, eps: eps, r: r, z: rand.NewZipf(r, 1.1, 8, uint64(eps-1))}
}

func (p *population) flow(f *flow.Pseudo, sub, ep int, t int64) {
	*f = flow.Pseudo{
		TimeStartMs: t, TimeEndMs: t + 200,
		Kind: flow.KindSubscriber, Direction: flow.DirOutbound, Epoch: 1,
		RemotePort: 443, Proto: 6, Bytes: 1500, Packets: 8, SamplingRate: 1,
	}
	f.Sub[0], f.Sub[1], f.Sub[2], f.Sub[3] = byte(sub>>24), byte(sub>>16), byte(sub>>8), byte(sub)
	f.Sub[15] = 0x5b
	f.Remote = flow.AddrFrom(netip.AddrFrom4([4]byte{100, byte(ep >> 16), byte(ep >> 8), byte(ep)}))
	f.Remote[10], f.Remote[11] = 0xff, 0xff
	f.Remote[12] = 23 + byte(ep>>24)
}

// flows returns n flows in start-time order over span, from random
// subscribers to Zipf-popular endpoints.
func (p *population) flows(n int, start int64, span time.Duration) []flow.Pseudo {
	fs := make([]flow.Pseudo, n)
	step := float64(span.Milliseconds()) / float64(n)
	for i := range fs {
		p.flow(&fs[i], p.r.IntN(p.subs), int(p.z.Uint64()), start+int64(float64(i)*step))
	}
	return fs
}

// BenchmarkObserve measures the per-flow path on one core: 2M flows of
// 200,000 subscribers to 100,000 endpoints over two hours (two window
// evaluations with the default 6 h window and 1 h hop). "steady" replays
// flows of pairs already tracked within one hop (no evaluation).
func BenchmarkObserve(b *testing.B) {
	cfg := detect.DefaultConfig()
	for _, tc := range []struct {
		name string
		span time.Duration
	}{{"steady", 50 * time.Minute}, {"with-evaluations", 2 * time.Hour}} {
		b.Run(tc.name, func(b *testing.B) {
			pop := newPopulation(200_000, 100_000, 1)
			t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).UnixMilli()
			fs := pop.flows(2_000_000, t0, tc.span)
			d, err := detect.New(cfg, detect.Deps{})
			if err != nil {
				b.Fatal(err)
			}
			if tc.name == "steady" {
				for i := 0; i < len(fs); i += 1024 {
					d.Observe(fs[i:min(len(fs), i+1024)])
				}
			}
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			n := 0
			for n < b.N {
				if tc.name != "steady" {
					b.StopTimer()
					d, _ = detect.New(cfg, detect.Deps{})
					b.StartTimer()
				}
				for i := 0; i < len(fs) && n < b.N; i += 1024 {
					j := min(len(fs), i+1024, i+b.N-n)
					d.Observe(fs[i:j])
					n += j - i
				}
				if tc.name != "steady" {
					d.Flush()
					_ = d.Results()
				}
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
			// CPU time of the process per flow, and the flows per second
			// of CPU: what one core does, independent of other load on
			// the machine (the wall-clock figure is not, on a shared host).
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/flow")
			b.ReportMetric(float64(b.N)/cpu.Seconds(), "flows/cpu-s")
		})
	}
}

// cpuTime returns the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMemory builds 10M tracked pairs (1M subscribers, 10 endpoints
// each out of 2M) with a skewed number of flows per pair (70% one flow,
// 20% two or three, 8% 4 to 16, 2% 17 to 64) and reports the heap per
// pair, measured with runtime.MemStats after a GC. Run it alone:
//
//	go test ./detect -run '^$' -bench Memory -benchtime 1x
func BenchmarkMemory(b *testing.B) {
	for _, pairs := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) {
			for range b.N {
				memoryRun(b, pairs)
			}
		})
	}
}

func memoryRun(b *testing.B, pairs int) {
	cfg := detect.DefaultConfig()
	cfg.MaxPairs, cfg.MaxBytes = 0, 0
	subs := pairs / 10
	pop := newPopulation(subs, 2*subs, 3)
	t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).UnixMilli()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d, err := detect.New(cfg, detect.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]flow.Pseudo, 0, 4096)
	flows := 0
	emit := func(s, e, n int) {
		for k := 0; k < n; k++ {
			batch = append(batch, flow.Pseudo{})
			// Times within the first 50 minutes: no window ends.
			pop.flow(&batch[len(batch)-1], s, e, t0+int64(pop.r.IntN(50*60_000)))
			if len(batch) == cap(batch) {
				d.Observe(batch)
				flows += len(batch)
				batch = batch[:0]
			}
		}
	}
	for s := 0; s < subs; s++ {
		for j := 0; j < 10; j++ {
			e := s*10 + j // distinct endpoints per subscriber slot
			e = (e*2654435761 + int(pop.z.Uint64())) % (2 * subs)
			var n int
			switch x := pop.r.Float64(); {
			case x < 0.70:
				n = 1
			case x < 0.90:
				n = 2 + pop.r.IntN(2)
			case x < 0.98:
				n = 4 + pop.r.IntN(13)
			default:
				n = 17 + pop.r.IntN(48)
			}
			emit(s, e, n)
		}
	}
	d.Observe(batch)
	flows += len(batch)
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := d.Stats()
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	b.ReportMetric(float64(st.Pairs), "pairs")
	b.ReportMetric(float64(flows), "flows")
	b.ReportMetric(heap/float64(st.Pairs), "heap-bytes/pair")
	b.ReportMetric(float64(st.Bytes)/float64(st.Pairs), "estimated-bytes/pair")
	b.ReportMetric(heap/(1<<30), "heap-GiB")
	runtime.KeepAlive(d)
}

// BenchmarkEvaluate measures a window evaluation per scored pair: 20,000
// pairs (2,000 subscribers x 10 endpoints) of 64 connections each over an
// hour, half of them beacons (period 30-90 s, 10% jitter) and half Poisson,
// unsampled and with every flow marked 1:10 sampled. One op is one
// evaluation of all of them (Flush of a detector fed beforehand).
func BenchmarkEvaluate(b *testing.B) {
	for _, rate := range []uint32{1, 10} {
		b.Run(fmt.Sprintf("sampling=1:%d", rate), func(b *testing.B) {
			r := rand.New(rand.NewPCG(5, 5))
			p := newPopulation(2000, 10, 5)
			var fs []flow.Pseudo
			for s := range 2000 {
				for e := range 10 {
					period := 30_000 + r.Float64()*60_000
					t := float64(t0) + r.Float64()*period
					for range 64 {
						var f flow.Pseudo
						p.flow(&f, s, e, int64(t))
						f.SamplingRate = rate
						fs = append(fs, f)
						if (s+e)%2 == 0 {
							t += period * (1 + 0.1*(2*r.Float64()-1))
						} else {
							t += r.ExpFloat64() * period
						}
					}
				}
			}
			sortFlows(fs)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				d := newDetector(b, detect.DefaultConfig(), nil)
				d.Observe(fs)
				b.StartTimer()
				d.Flush()
				_ = d.Results()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20000, "ns/pair")
		})
	}
}
