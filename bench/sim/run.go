package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Exporter is one simulated router: an encoder and where its datagrams go.
// Run gives each exporter the flows of every len(exporters)-th subscriber,
// as if each router served a share of the ISP.
type Exporter struct {
	// Encoder builds the router's datagrams.
	Encoder Encoder
	// W receives each datagram in one Write call (a connected UDP socket, a
	// pcap file, a test's recorder). When W implements BatchWriter, Run
	// writes datagrams in batches. W must not keep the slice it is given.
	W io.Writer
}

// BatchWriter writes several datagrams with one call (for example with
// sendmmsg). It must not keep the slices it is given.
type BatchWriter interface {
	// WriteBatch writes every datagram of dgrams, in order, and returns how
	// many could not be written and the first error.
	WriteBatch(dgrams [][]byte) (failed int, err error)
}

// Pacing says how fast Run puts the simulation on the wire.
type Pacing struct {
	// Speed is the event seconds simulated per wall second (120: two
	// minutes of wall time cover four hours of event time). 0 means as fast
	// as possible. Ignored when DatagramRate or FlowRate is set.
	Speed float64
	// DatagramRate paces the output at this many datagrams per wall second
	// (all exporters together); event time advances as fast as needed.
	DatagramRate float64
	// FlowRate paces the output at this many flow records (sFlow: flow
	// samples) per wall second; event time advances as fast as needed.
	FlowRate float64
	// Duration ends the run after this much event time; 0 means no limit.
	Duration time.Duration
	// WallDuration ends the run after this much wall time; 0 means no limit.
	WallDuration time.Duration
}

// Validate checks the pacing.
func (p Pacing) Validate() error {
	var errs []error
	if p.Speed < 0 || p.DatagramRate < 0 || p.FlowRate < 0 || p.Duration < 0 || p.WallDuration < 0 {
		errs = append(errs, errors.New("pacing: speed, rates and durations must not be negative"))
	}
	if p.DatagramRate > 0 && p.FlowRate > 0 {
		errs = append(errs, errors.New("pacing: set a datagram rate or a flow rate, not both"))
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of a simulator's counters.
type Stats struct {
	// EventTime is the simulated time reached.
	EventTime time.Time
	// Generated counts the records the model produced (before sampling).
	Generated uint64
	// Datagrams, Flows and Bytes count what was handed to the exporters'
	// writers: datagrams, flow records (sFlow: flow samples) and datagram
	// bytes (UDP payload), failed writes included.
	Datagrams uint64
	Flows     uint64
	Bytes     uint64
	// SendErrors counts datagrams whose write failed (for example while no
	// collector listens yet); they are not retried.
	SendErrors uint64
}

// Stats returns the simulator's counters. It is safe to call while Run runs.
func (s *Simulator) Stats() Stats {
	return Stats{
		EventTime:  time.UnixMilli(s.stats.eventMs.Load()),
		Generated:  s.stats.generated.Load(),
		Datagrams:  s.stats.datagrams.Load(),
		Flows:      s.stats.flows.Load(),
		Bytes:      s.stats.bytes.Load(),
		SendErrors: s.stats.sendErrors.Load(),
	}
}

const batchMax = 64

// out is Run's per-exporter state.
type out struct {
	*Exporter
	bw    BatchWriter
	bufs  [batchMax][]byte
	batch [][]byte
	part  []Record
}

func (o *out) flush(s *Simulator) {
	if len(o.batch) == 0 {
		return
	}
	failed, _ := o.bw.WriteBatch(o.batch)
	s.stats.sendErrors.Add(uint64(failed))
	o.batch = o.batch[:0]
}

// Run simulates and exports until ctx is canceled or a duration of p is
// reached. It returns nil when a duration ends the run and ctx's error when
// ctx ends it. Write errors are counted in Stats, not returned: a simulator
// keeps sending while a collector restarts.
func (s *Simulator) Run(ctx context.Context, p Pacing, exporters ...*Exporter) error {
	if len(exporters) == 0 {
		return errors.New("run simulator: no exporter")
	}
	if err := p.Validate(); err != nil {
		return err
	}
	outs := make([]*out, len(exporters))
	for i, e := range exporters {
		if e == nil || e.Encoder == nil || e.W == nil {
			return fmt.Errorf("run simulator: exporter %d has no encoder or writer", i)
		}
		o := &out{Exporter: e, batch: make([][]byte, 0, batchMax)}
		o.bw, _ = e.W.(BatchWriter)
		for k := range o.bufs {
			o.bufs[k] = make([]byte, 0, 65536)
		}
		outs[i] = o
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	wallStart := time.Now()
	eventStart := s.nowMs
	var units float64 // datagrams or flows written, for rate pacing
	var rate float64
	perFlow := false
	switch {
	case p.DatagramRate > 0:
		rate = p.DatagramRate
	case p.FlowRate > 0:
		rate, perFlow = p.FlowRate, true
	}
	// sleepUntil flushes, then waits for wall time t; false when ctx ended
	// or the wall duration is reached first.
	sleepUntil := func(t time.Time) bool {
		for _, o := range outs {
			if o.bw != nil {
				o.flush(s)
			}
		}
		last := true
		if p.WallDuration > 0 {
			if limit := wallStart.Add(p.WallDuration); t.After(limit) {
				t, last = limit, false
			}
		}
		d := time.Until(t)
		if d <= 0 {
			return last && ctx.Err() == nil
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return last
		}
	}
	defer func() {
		for _, o := range outs {
			if o.bw != nil {
				o.flush(s)
			}
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p.Duration > 0 && s.nowMs-eventStart >= p.Duration.Milliseconds() {
			return nil
		}
		if p.WallDuration > 0 && time.Since(wallStart) >= p.WallDuration {
			return nil
		}
		recs, exportMs := s.Next()
		step := float64(exportMs-1000-eventStart) / 1000
		if len(outs) == 1 {
			outs[0].part = recs
		} else {
			for _, o := range outs {
				o.part = o.part[:0]
			}
			for i := range recs {
				o := outs[int(recs[i].Subscriber)%len(outs)]
				o.part = append(o.part, recs[i])
			}
		}
		total, done := len(recs), 0
		for _, o := range outs {
			part := o.part
			for len(part) > 0 || o.Encoder.Pending() {
				buf := o.bufs[len(o.batch)]
				d, n, flows := o.Encoder.Encode(buf, part, exportMs)
				part = part[n:]
				done += n
				if len(d) == 0 {
					continue
				}
				if cap(d) > cap(buf) {
					o.bufs[len(o.batch)] = d[:0]
				}
				s.stats.datagrams.Add(1)
				s.stats.flows.Add(uint64(flows))
				s.stats.bytes.Add(uint64(len(d)))
				if o.bw != nil {
					o.batch = append(o.batch, d)
					if len(o.batch) == batchMax {
						o.flush(s)
					}
				} else if _, err := o.W.Write(d); err != nil {
					s.stats.sendErrors.Add(1)
				}
				// Pacing.
				var target time.Time
				switch {
				case rate > 0:
					if perFlow {
						units += float64(flows)
					} else {
						units++
					}
					target = wallStart.Add(time.Duration(units / rate * 1e9))
				case p.Speed > 0:
					frac := 1.0
					if total > 0 {
						frac = float64(done) / float64(total)
					}
					target = wallStart.Add(time.Duration((step + frac) / p.Speed * 1e9))
				default:
					continue
				}
				if time.Until(target) > time.Millisecond && !sleepUntil(target) {
					return ctx.Err()
				}
			}
		}
		if rate == 0 && p.Speed > 0 {
			// Event time may not run ahead of the wall clock, even in
			// steps without traffic.
			if !sleepUntil(wallStart.Add(time.Duration((step + 1) / p.Speed * 1e9))) {
				return ctx.Err()
			}
		}
	}
}
