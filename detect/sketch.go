package detect

import (
	"github.com/axiomhq/hyperloglog"
)

// sketchPrecision is the HyperLogLog precision of fan-in sketches: 2^12
// registers, 4 KiB when dense, about 1.6% standard error.
const sketchPrecision = 12

// hopOf returns the hop number of an absolute time (ms).
func (d *Detector) hopOf(t int64) int64 { return floorDiv(t, d.cfg.Hop.Milliseconds()) }

// sketchHops is the number of per-hop sketches an endpoint keeps: enough
// to cover a window plus the hop in progress.
func (d *Detector) sketchHops() int {
	w, h := d.cfg.Window.Milliseconds(), d.cfg.Hop.Milliseconds()
	return int((w+h-1)/h) + 1
}

// startSketches switches an endpoint's fan-in to HyperLogLog sketches
// (one per hop, so that old hops drop out of the window), seeding the
// current hop with the subscribers of its tracked pairs.
func (d *Detector) startSketches(ep *endpoint, _ uint32) {
	n := d.sketchHops()
	ep.sketches = make([]*hyperloglog.Sketch, n)
	ep.sketchAt = make([]int64, n)
	for i := range ep.sketchAt {
		ep.sketchAt[i] = -1 << 62
	}
	now := d.maxStart
	for pi := ep.head; pi != 0; pi = d.ps[pi-1].next {
		d.sketchInsert(ep, now, d.subs[d.ps[pi-1].sub].hash)
	}
}

// sketchInsert adds a subscriber hash to the sketch of the hop of t.
func (d *Detector) sketchInsert(ep *endpoint, t int64, h uint64) {
	hop := d.hopOf(t)
	i := int(uint64(hop) % uint64(len(ep.sketches)))
	if ep.sketchAt[i] != hop {
		if ep.sketchAt[i] > hop {
			return // a late flow for a hop whose slot is reused
		}
		if ep.sketches[i] == nil {
			sk, err := hyperloglog.NewSketch(sketchPrecision, true)
			if err != nil {
				return
			}
			ep.sketches[i] = sk
			d.sketchB += 1 << sketchPrecision
		} else {
			ep.sketches[i].Reset()
		}
		ep.sketchAt[i] = hop
	}
	ep.sketches[i].InsertHash(h)
}

// sketchFanIn estimates the distinct subscribers of ep in the hops that
// overlap [ws, we).
func (d *Detector) sketchFanIn(ep *endpoint, ws, we int64) int {
	lo, hi := d.hopOf(ws), d.hopOf(we-1)
	var m *hyperloglog.Sketch
	for i, sk := range ep.sketches {
		if sk == nil || ep.sketchAt[i] < lo || ep.sketchAt[i] > hi {
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
	for _, sk := range ep.sketches {
		if sk != nil {
			d.sketchB -= 1 << sketchPrecision
		}
	}
	ep.sketches, ep.sketchAt = nil, nil
}
