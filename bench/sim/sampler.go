package sim

import (
	"math"
	"math/rand/v2"
)

// Sampler applies random 1:N packet sampling to flows, the way a sampling
// router meters them: every packet is selected independently with
// probability 1/N, a flow is exported only if at least one of its packets
// was selected, and its packet and byte counts are those of the selected
// packets. The zero Sampler and a Sampler with rate 0 or 1 select every
// packet. A Sampler is not safe for concurrent use.
type Sampler struct {
	rate uint32
	// logq is log(1 - 1/rate), for geometric gaps.
	logq float64
	// skip is the number of packets to pass before the next selected one.
	skip uint64
	// pool counts every packet offered, selected or not.
	pool uint64
	rng  *rand.Rand
}

// NewSampler returns a 1:rate packet sampler seeded with seed.
func NewSampler(rate uint32, seed uint64) *Sampler {
	s := &Sampler{rate: rate, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	if rate > 1 {
		s.logq = math.Log1p(-1 / float64(rate))
		s.skip = s.gap()
	}
	return s
}

// Rate returns N of the 1:N sampling (1 when unsampled).
func (s *Sampler) Rate() uint32 {
	if s == nil || s.rate <= 1 {
		return 1
	}
	return s.rate
}

// Pool returns the number of packets offered so far, selected or not (the
// sFlow sample_pool).
func (s *Sampler) Pool() uint64 { return s.pool }

// gap draws the number of packets passed over before the next selected one
// (geometric with success probability 1/rate).
func (s *Sampler) gap() uint64 {
	u := 1 - s.rng.Float64() // (0, 1]
	return uint64(math.Log(u) / s.logq)
}

// passes reports whether the sampler selects none of r's packets, counting
// them; the encoders call it first, as a cheap path for the common case.
func (s *Sampler) passes(r *Record) bool {
	if s.rate > 1 && s.skip >= r.Packets {
		s.skip -= r.Packets
		s.pool += r.Packets
		return true
	}
	return false
}

// Sample selects packets of r. It returns the number of selected packets;
// when it is not zero, out holds r reduced to the selected packets (bytes in
// proportion; a single selected packet gets start = end at a time within
// the flow). r and out may be the same record.
func (s *Sampler) Sample(r *Record, out *Record) uint64 {
	s.pool += r.Packets
	if s.rate <= 1 {
		*out = *r
		return r.Packets
	}
	n := r.Packets
	var k uint64
	for s.skip < n {
		k++
		n -= s.skip + 1
		s.skip = s.gap()
	}
	s.skip -= n
	if k == 0 {
		return 0
	}
	*out = *r
	if k < r.Packets {
		out.Bytes = r.Bytes * k / r.Packets
		if min := k * 20; out.Bytes < min {
			out.Bytes = min
		}
		out.Packets = k
		if k == 1 && r.EndMs > r.StartMs {
			t := r.StartMs + s.rng.Int64N(r.EndMs-r.StartMs+1)
			out.StartMs, out.EndMs = t, t
		}
	}
	return k
}
