package detect

import (
	"math/bits"
	"unsafe"

	"github.com/axiomhq/hyperloglog"

	"github.com/ccflow/ccflow/flow"
)

// Times inside the detector are uint32 milliseconds since Detector.base
// (about 49 days of range); base moves forward at evaluations (rebase) so
// that offsets never overflow.

// inlineSamples is the number of connection starts kept inside a pair
// before it gets a sample block.
const inlineSamples = 3

// smallBlock is the capacity of the first sample block a pair gets; pairs
// that outgrow it move to a block of Config.SampleSize.
const smallBlock = 16

// pair is the state of one (subscriber, remote endpoint) pair. It is kept
// small (72 bytes) because carriers track tens of millions of them; most
// pairs see few connections in a window and never need a sample block.
type pair struct {
	sub, ep    uint32 // indexes into Detector.subs and Detector.eps
	prev, next uint32 // the endpoint's doubly linked pair list (index+1, 0 = none)
	first      uint32 // first connection start in the window
	last       uint32 // latest connection start
	lastEnd    uint32 // end of the latest flow (continuation detection)
	flows      uint32 // flows in the window (pro-rated when older than it)
	bytes      uint64 // bytes in the window (as exported, pro-rated likewise)
	block      uint32 // sample block (index+1, 0 = inline); class by cap
	starts     [inlineSamples]uint32
	sizes      [inlineSamples]uint16
	n          uint8  // samples held
	cap        uint8  // capacity of the current storage
	score      uint8  // last pair beacon score * 250 (eviction priority)
	flags      uint8  // pairDead, ...
	rate       uint16 // largest sampling rate seen (saturated)
	lastPort   uint16 // subscriber port of the latest flow
}

const (
	pairLive uint8 = 1 << iota
	pairAllowed
)

// sub is a subscriber pseudonym (with its key epoch).
type sub struct {
	key   subKey
	hash  uint64 // murmur3 of the pseudonym, for HyperLogLog sketches
	pairs uint32 // tracked pairs
	// beacons counts the subscriber's beaconing endpoints during an
	// evaluation (fan-out).
	beacons uint32
}

type subKey struct {
	p     flow.Pseudonym
	epoch uint32
}

type epKey struct {
	addr  flow.Addr
	port  uint16
	proto uint8
}

// endpoint is the state of one remote endpoint (address, port, protocol).
type endpoint struct {
	key      epKey
	head     uint32 // first pair (index+1)
	npairs   uint32 // tracked pairs (the exact fan-in while small)
	baseline float32
	hasBase  bool
	allowed  int32 // allowlist verdict: 0 unknown, -1 none, i+1 index into Detector.allowTexts
	// sketches counts distinct subscribers per hop with HyperLogLog once
	// the endpoint has more than Config.FanInExact pairs; index by hop
	// number modulo its length.
	sketches []*hyperloglog.Sketch
	sketchAt []int64 // hop number each sketch holds
	// Enrichment, copied from the newest flow (strings are interned by
	// the enricher).
	asn                        uint32
	asOrg, country, prov, intl string
}

// pairBytes is the size of a pair in memory.
const pairBytes = int64(unsafe.Sizeof(pair{}))

// Approximate per-entry costs of the maps (key + value + Go map overhead),
// used for the tracked-bytes estimate.
const (
	subBytes = int64(unsafe.Sizeof(sub{})) + int64(unsafe.Sizeof(subKey{})) + 4 + 24
	epBytes  = int64(unsafe.Sizeof(endpoint{})) + int64(unsafe.Sizeof(epKey{})) + 4 + 24
)

// pool hands out sample blocks of one capacity. A block holds cap starts
// (uint32) and cap sizes (uint16).
type pool struct {
	cap    int
	starts []uint32
	sizes  []uint16
	free   []uint32
	used   int
}

func (p *pool) alloc() uint32 {
	p.used++
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	b := uint32(len(p.starts) / p.cap)
	p.starts = append(p.starts, make([]uint32, p.cap)...)
	p.sizes = append(p.sizes, make([]uint16, p.cap)...)
	return b
}

func (p *pool) release(b uint32) {
	p.used--
	p.free = append(p.free, b)
}

func (p *pool) block(b uint32) ([]uint32, []uint16) {
	o := int(b) * p.cap
	return p.starts[o : o+p.cap : o+p.cap], p.sizes[o : o+p.cap : o+p.cap]
}

// bytes returns the memory the pool holds (used or free).
func (p *pool) bytes() int64 {
	return int64(cap(p.starts))*4 + int64(cap(p.sizes))*2 + int64(cap(p.free))*4
}

// pairTable is an open-addressing hash table from (sub, ep) to pair index,
// with linear probing and backward-shift deletion. A slot holds index+1;
// keys are read from the pairs themselves, so a slot costs 4 bytes.
type pairTable struct {
	slots []uint32
	mask  uint64
	n     int
}

func pairHash(s, e uint32) uint64 {
	h := uint64(s)<<32 | uint64(e)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

func (t *pairTable) init(size int) {
	n := 1024
	for n < size*2 {
		n <<= 1
	}
	t.slots = make([]uint32, n)
	t.mask = uint64(n - 1)
	t.n = 0
}

// find returns the slot of (s, e) and whether it holds the pair; when not,
// the slot is where it would be inserted.
func (t *pairTable) find(pairs []pair, s, e uint32) (uint64, bool) {
	i := pairHash(s, e) & t.mask
	for {
		v := t.slots[i]
		if v == 0 {
			return i, false
		}
		p := &pairs[v-1]
		if p.sub == s && p.ep == e {
			return i, true
		}
		i = (i + 1) & t.mask
	}
}

func (t *pairTable) insertAt(slot uint64, idx uint32) { t.slots[slot] = idx + 1; t.n++ }

// remove deletes the pair at index idx (which must be present).
func (t *pairTable) remove(pairs []pair, idx uint32) {
	p := &pairs[idx]
	i, ok := t.find(pairs, p.sub, p.ep)
	if !ok {
		return
	}
	t.n--
	// Backward-shift deletion keeps probe sequences intact.
	j := i
	for {
		j = (j + 1) & t.mask
		v := t.slots[j]
		if v == 0 {
			break
		}
		q := &pairs[v-1]
		home := pairHash(q.sub, q.ep) & t.mask
		// Move q into the hole at i unless its home lies cyclically in
		// (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j)) {
			t.slots[i] = v
			i = j
		}
	}
	t.slots[i] = 0
}

// grow doubles the table when it is half full.
func (t *pairTable) grow(pairs []pair) {
	old := t.slots
	t.init(len(old))
	for _, v := range old {
		if v == 0 {
			continue
		}
		p := &pairs[v-1]
		i := pairHash(p.sub, p.ep) & t.mask
		for t.slots[i] != 0 {
			i = (i + 1) & t.mask
		}
		t.slots[i] = v
		t.n++
	}
}

// encodeSize packs a byte count into 16 bits: exact below 32768, then a
// logarithmic scale with 10 bits of mantissa (0.1% steps) up to about 2^46
// bytes, where it saturates.
func encodeSize(b uint64) uint16 {
	if b < 1<<15 {
		return uint16(b)
	}
	e := bits.Len64(b) - 11 // b>>e has 11 significant bits
	if e > 31 {
		return 0xffff
	}
	return 1<<15 | uint16(e)<<10 | uint16((b>>e)&0x3ff)
}

// decodeSize inverts encodeSize (to within 0.1%).
func decodeSize(v uint16) float64 {
	if v < 1<<15 {
		return float64(v)
	}
	e := (v >> 10) & 0x1f
	m := uint64(v&0x3ff) | 1<<10
	return float64(m << e)
}
