package sim_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/ccflow/ccflow/bench/sim"
)

// benchRecords returns ten simulated minutes of a 2000-subscriber ISP.
func benchRecords(b *testing.B) ([]sim.Record, int64) {
	cfg := testConfig()
	cfg.Subscribers = 2000
	var recs []sim.Record
	var ms int64
	for _, s := range simulate(b, cfg, 600) {
		recs = append(recs, s.recs...)
		ms = s.exportMs
	}
	return recs, ms
}

// BenchmarkEncode measures the encoders alone, one datagram per operation,
// on one core: datagrams/s and flows/s (sFlow: samples/s) per core.
//
//	go test ./bench/sim -run '^$' -bench Encode -cpu 1
func BenchmarkEncode(b *testing.B) {
	recs, ms := benchRecords(b)
	for _, f := range []sim.Format{sim.FormatNetFlow9, sim.FormatIPFIX, sim.FormatSFlow5} {
		for _, sampling := range []uint32{1, 100} {
			b.Run(fmt.Sprintf("%s/1:%d", f, sampling), func(b *testing.B) {
				enc, err := sim.NewEncoder(f, sim.EncoderConfig{Sampling: sampling})
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, 0, 1400)
				rest := recs
				var flows, bytes int
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; {
					if len(rest) == 0 && !enc.Pending() {
						rest = recs
					}
					d, n, fl := enc.Encode(buf, rest, ms)
					rest = rest[n:]
					if len(d) > 0 {
						i++
						flows += fl
						bytes += len(d)
					}
				}
				sec := b.Elapsed().Seconds()
				b.ReportMetric(float64(b.N)/sec, "datagrams/s")
				b.ReportMetric(float64(flows)/sec, "flows/s")
				b.ReportMetric(float64(flows)/float64(b.N), "flows/datagram")
				b.SetBytes(int64(bytes / b.N))
			})
		}
	}
}

// BenchmarkSimulate measures the traffic model alone: generated records/s.
func BenchmarkSimulate(b *testing.B) {
	cfg := testConfig()
	cfg.Subscribers = 10000
	s, err := sim.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var n int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		recs, _ := s.Next()
		n += len(recs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRunUDP measures the whole load generator, model + encoder +
// sendmmsg to a loopback socket nobody reads, unpaced: what `ccflow
// simulate` can offer a collector from one core.
func BenchmarkRunUDP(b *testing.B) {
	for _, f := range []sim.Format{sim.FormatNetFlow9, sim.FormatIPFIX, sim.FormatSFlow5} {
		b.Run(f.String(), func(b *testing.B) {
			ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			w, err := sim.DialUDP(ln.LocalAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			cfg := testConfig()
			cfg.Subscribers = 20000
			s, err := sim.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			sampling := uint32(1)
			if f == sim.FormatSFlow5 {
				sampling = 100
			}
			enc, err := sim.NewEncoder(f, sim.EncoderConfig{Sampling: sampling})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			// b.N event seconds, as fast as possible.
			err = s.Run(context.Background(), sim.Pacing{Duration: time.Duration(b.N) * time.Second}, &sim.Exporter{Encoder: enc, W: w})
			if err != nil {
				b.Fatal(err)
			}
			st := s.Stats()
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(st.Datagrams)/sec, "datagrams/s")
			b.ReportMetric(float64(st.Flows)/sec, "flows/s")
			b.ReportMetric(float64(st.SendErrors), "send-errors")
		})
	}
}
