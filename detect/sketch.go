package detect

import (
	"github.com/axiomhq/hyperloglog"
)

// sketchPrecision is the HyperLogLog precision of fan-in sketches: 2^12
// registers (4 KiB, dense from the start so that an insertion is one
// register update), about 1.6% standard error.
const sketchPrecision = 12

// hopOf returns the hop number of an absolute time (ms).
func (d *Detector) hopOf(t int64) int64 { return floorDiv(t, d.cfg.Hop.Milliseconds()) }

// sketchHops is the number of per-hop sketches an endpoint keeps: enough
// to cover a window plus the hop in progress.
func (d *Detector) sketchHops() int {
	w, h := d.cfg.Window.Milliseconds(), d.cfg.Hop.Milliseconds()
	return int((w+h-1)/h) + 1
}

// newSketchSet switches an endpoint's fan-in to HyperLogLog sketches (one
// per hop, so that old hops drop out of the window). Subscribers seen
// before are not replayed into them: fan-in is the larger of the exact
// count of tracked pairs and the sketch estimate.
func (d *Detector) newSketchSet() *sketchSet {
	n := d.sketchHops()
	s := &sketchSet{sketches: make([]*hyperloglog.Sketch, n), at: make([]int64, n)}
	for i := range s.at {
		s.at[i] = -1 << 62
	}
	return s
}

// sketchInsert adds a subscriber hash to the sketch of the hop of t.
func (d *Detector) sketchInsert(ep *endpoint, t int64, h uint64) {
	hop := d.hopOf(t)
	s := ep.sk
	i := int(uint64(hop) % uint64(len(s.sketches)))
	if s.at[i] != hop {
		if s.at[i] > hop {
			return // a late flow for a hop whose slot is reused
		}
		if s.sketches[i] == nil {
			sk, err := hyperloglog.NewSketch(sketchPrecision, false)
			if err != nil {
				return
			}
			s.sketches[i] = sk
			d.sketchB += 1 << sketchPrecision
		} else {
			s.sketches[i].Reset()
		}
		s.at[i] = hop
	}
	s.sketches[i].InsertHash(h)
}

// sketchFanIn estimates the distinct subscribers of ep in the hops that
// overlap [ws, we).
func (d *Detector) sketchFanIn(ep *endpoint, ws, we int64) int {
	lo, hi := d.hopOf(ws), d.hopOf(we-1)
	var m *hyperloglog.Sketch
	for i, sk := range ep.sk.sketches {
		if sk == nil || ep.sk.at[i] < lo || ep.sk.at[i] > hi {
			continue
		}
		if m == nil {
			m = sk.Clone()
			continue
		}
		_ = m.Merge(sk)
	}
	if m == nil {
		return 0
	}
	return int(m.Estimate())
}

// dropSketches returns an endpoint to exact fan-in.
func (d *Detector) dropSketches(ep *endpoint) {
	if ep.sk == nil {
		return
	}
	for _, sk := range ep.sk.sketches {
		if sk != nil {
			d.sketchB -= 1 << sketchPrecision
		}
	}
	ep.sk = nil
}
