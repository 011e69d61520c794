package sim_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/ccflow/ccflow/bench/sim"
)

// recorder keeps copies of the datagrams written to it.
type recorder struct {
	mu     sync.Mutex
	dgrams [][]byte
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dgrams = append(r.dgrams, append([]byte(nil), b...))
	return len(b), nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dgrams)
}

// TestRunSplitsSubscribersOverExporters: each exporter (router) carries the
// flows of its share of subscribers, and an event duration ends the run.
func TestRunSplitsSubscribersOverExporters(t *testing.T) {
	s, err := sim.New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	var exps []*sim.Exporter
	var recs [3]recorder
	var subs [3]map[int32]bool
	for k := range 3 {
		subs[k] = map[int32]bool{}
		enc, err := sim.NewEncoder(sim.Format(k+1), sim.EncoderConfig{
			ObservationDomain: uint32(k + 1), Sampling: 8,
			Trace: func(r *sim.Record) { subs[k][r.Subscriber] = true },
		})
		if err != nil {
			t.Fatal(err)
		}
		exps = append(exps, &sim.Exporter{Encoder: enc, W: &recs[k]})
	}
	start := s.Now()
	if err := s.Run(context.Background(), sim.Pacing{Duration: 10 * time.Minute}, exps...); err != nil {
		t.Fatal(err)
	}
	if got := s.Now() - start; got != 600_000 {
		t.Errorf("ran %d ms of event time, want 600000", got)
	}
	st := s.Stats()
	var total int
	for k := range 3 {
		total += recs[k].count()
		if recs[k].count() == 0 || len(subs[k]) == 0 {
			t.Fatalf("exporter %d sent nothing", k)
		}
		for sub := range subs[k] {
			if int(sub)%3 != k {
				t.Fatalf("exporter %d carried subscriber %d", k, sub)
			}
		}
	}
	if uint64(total) != st.Datagrams || st.Flows == 0 || st.Generated < st.Flows/2 || st.SendErrors != 0 {
		t.Errorf("stats %+v, %d datagrams recorded", st, total)
	}
	if !st.EventTime.Equal(time.UnixMilli(start + 600_000)) {
		t.Errorf("stats event time %v", st.EventTime)
	}
}

// TestRunSpeedOverUDP runs 60 event seconds at 600x over a real UDP socket:
// it takes about 0.1 s of wall time, and a listener decodes what was sent.
func TestRunSpeedOverUDP(t *testing.T) {
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_ = ln.SetReadBuffer(8 << 20)
	got := make(chan int)
	go func() {
		templates := netflow.CreateTemplateSystem()
		buf := make([]byte, 65536)
		n := 0
		for {
			_ = ln.SetReadDeadline(time.Now().Add(3 * time.Second))
			k, err := ln.Read(buf)
			if err != nil {
				got <- n
				return
			}
			var nf9 netflow.NFv9Packet
			var ipfix netflow.IPFIXPacket
			if err := netflow.DecodeMessageVersion(bytes.NewBuffer(buf[:k]), templates, &nf9, &ipfix); err != nil {
				t.Errorf("decode: %v", err)
			}
			n++
		}
	}()
	w, err := sim.DialUDP(ln.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if a := w.LocalAddr(); !a.Is4() || !a.IsLoopback() {
		t.Errorf("local address %v", a)
	}
	s, err := sim.New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	enc, err := sim.NewIPFIXEncoder(sim.EncoderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.Run(context.Background(), sim.Pacing{Speed: 600, Duration: time.Minute}, &sim.Exporter{Encoder: enc, W: w}); err != nil {
		t.Fatal(err)
	}
	wall := time.Since(t0)
	if wall < 90*time.Millisecond || wall > 10*time.Second {
		t.Errorf("60 event seconds at 600x took %v, want about 100ms", wall)
	}
	st := s.Stats()
	if n := <-got; uint64(n) != st.Datagrams || n == 0 {
		t.Errorf("listener received %d datagrams, %d sent", n, st.Datagrams)
	}
}

// TestRunRate paces by datagrams per second and by flows per second.
func TestRunRate(t *testing.T) {
	for _, p := range []sim.Pacing{
		{DatagramRate: 2000, WallDuration: 500 * time.Millisecond},
		{FlowRate: 40000, WallDuration: 500 * time.Millisecond},
	} {
		s, err := sim.New(testConfig())
		if err != nil {
			t.Fatal(err)
		}
		enc, err := sim.NewNetFlow9Encoder(sim.EncoderConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var rec recorder
		if err := s.Run(context.Background(), p, &sim.Exporter{Encoder: enc, W: &rec}); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		got, want := float64(st.Datagrams), p.DatagramRate/2
		if p.FlowRate > 0 {
			got, want = float64(st.Flows), p.FlowRate/2
		}
		// Never faster than asked; slower only on a starved machine.
		if got < 0.5*want || got > 1.1*want {
			t.Errorf("pacing %+v: sent %.0f in 0.5 s, want about %.0f", p, got, want)
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	s, err := sim.New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := sim.NewSFlowEncoder(sim.EncoderConfig{Sampling: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = s.Run(ctx, sim.Pacing{Speed: 1}, &sim.Exporter{Encoder: enc, W: &recorder{}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run returned %v, want the context's error", err)
	}
	if err := s.Run(context.Background(), sim.Pacing{}); err == nil {
		t.Error("Run without exporters succeeded")
	}
	if err := s.Run(context.Background(), sim.Pacing{DatagramRate: 1, FlowRate: 1}, &sim.Exporter{Encoder: enc, W: &recorder{}}); err == nil {
		t.Error("Run with two rates succeeded")
	}
}
