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
// to 64 bytes because carriers track tens of millions of them; most pairs
// see few connections in a window and never need a sample block. The
// inline samples keep no durations (no room); a sample block keeps each
// connection's duration too, for the idle times between connections
// (scheduleTiming).
type pair struct {
	fp      uint64 // fingerprint of (pseudonym, epoch, endpoint): the pair table's key
	sub, ep uint32 // indexes into Detector.subs and Detector.eps
	first   uint32 // first connection start in the window
	last    uint32 // latest connection start
	flows   uint32 // flows in the window (pro-rated when older than it)
	bytes16 uint32 // bytes in the window in units of 16 (as exported, pro-rated likewise, saturating)
	block   uint32 // sample block (index+1, 0 = inline); class by cap
	starts  [inlineSamples]uint32
	sizes   [inlineSamples]uint16
	// endDelta is the duration of the latest flow in units of 100 ms
	// (saturating), for continuation detection.
	endDelta uint16
	rate     uint16 // largest sampling rate seen (saturated)
	lastPort uint16 // subscriber port of the latest flow
	n        uint8  // samples held
	cap      uint8  // capacity of the current storage
	score    uint8  // last pair beacon score * 250 (eviction priority)
	flags    uint8  // pairLive, pairAllowed, pairData
}

// lastEnd is the end of the latest flow (offset).
func (p *pair) lastEnd() uint32 { return p.last + uint32(p.endDelta)*100 }

// setEnd records the end of the latest flow.
func (p *pair) setEnd(end uint32) {
	d := uint32(0)
	if end > p.last {
		d = min((end-p.last+99)/100, 65535)
	}
	p.endDelta = uint16(d)
}

// totalBytes returns the pair's bytes.
func (p *pair) totalBytes() uint64 { return uint64(p.bytes16) << 4 }

// addBytes adds a flow's bytes, rounded to units of 16, saturating.
func (p *pair) addBytes(b uint64) {
	p.bytes16 = uint32(min(uint64(p.bytes16)+(b+8)>>4, 1<<32-1))
}

// chunkBits sets the size of the chunks the pair slab grows by (2^14
// pairs, about 1.2 MB): growing by chunks never copies pairs and never
// holds more than one partly used chunk, where doubling a slice would
// hold up to twice the pairs' memory.
const chunkBits = 14

// slab holds the pairs, addressed by index.
type slab struct {
	chunks [][]pair
	n      int // indexes handed out so far (live or free)
}

func (s *slab) at(i uint32) *pair { return &s.chunks[i>>chunkBits][i&(1<<chunkBits-1)] }

// add returns a new index, growing the slab by a chunk when needed.
func (s *slab) add() uint32 {
	if s.n == len(s.chunks)<<chunkBits {
		s.chunks = append(s.chunks, make([]pair, 1<<chunkBits))
	}
	s.n++
	return uint32(s.n - 1)
}

func (s *slab) bytes() int64 { return int64(len(s.chunks)) << chunkBits * pairBytes }

const (
	pairLive uint8 = 1 << iota
	// pairAllowed marks pairs of allowlisted endpoints (evicted first).
	pairAllowed
	// pairData marks pairs that exchanged data at least once: a flow that
	// was not TCP, was sampled, or was more than a handshake (see
	// handshakeOnly).
	pairData
)

// handshakeOnly says whether an unsampled TCP flow exchanged no data: its
// TCP flags, when exported, show no ACK (SYNs only: unanswered), or it has
// at most 3 packets of at most 80 bytes each (SYN and RST of a refused
// connection, SYN retries; archives that count payload bytes only show 0).
// Sampled flows and flows without packet counts are never handshake-only:
// a sampled flow's packets are not all of its packets.
func handshakeOnly(f *flow.Pseudo) bool {
	if f.Proto != 6 || f.SamplingRate > 1 {
		return false
	}
	if f.TCPFlags != 0 && f.TCPFlags&tcpACK == 0 {
		return true
	}
	return f.Packets > 0 && f.Packets <= 3 && f.Bytes <= 80*f.Packets
}

// tcpACK is the ACK bit of the TCP flags.
const tcpACK = 0x10

// sub is a subscriber pseudonym (with its key epoch).
type sub struct {
	key   subKey
	pairs uint32 // tracked pairs
	// beacons counts the subscriber's beaconing endpoints during an
	// evaluation (fan-out).
	beacons uint32
	live    bool
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
// It is small (48 bytes): sketches and enrichment live behind pointers,
// the former only for endpoints with many subscribers, the latter shared
// by all endpoints with the same enrichment.
type endpoint struct {
	key      epKey
	npairs   uint32 // tracked pairs (the exact fan-in while small)
	baseline float32
	allowed  int32 // allowlist verdict: 0 unknown, -1 none, i+1 index into Detector.allowTexts
	hasBase  bool
	// sk counts distinct subscribers per hop with HyperLogLog once the
	// endpoint has more than Config.FanInExact pairs.
	sk *sketchSet
	// info is the enrichment of the newest flow (interned).
	info *enrichment
}

// sketchSet holds an endpoint's per-hop HyperLogLog sketches, indexed by
// hop number modulo their count.
type sketchSet struct {
	sketches []*hyperloglog.Sketch
	at       []int64 // hop number each sketch holds
}

// enrichment is the enrichment of a remote endpoint, interned so that
// endpoints share it (strings from the enricher are shared already).
type enrichment struct {
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
// (uint32), cap sizes (uint16) and cap durations (uint16, encodeDur).
type pool struct {
	cap    int
	starts []uint32
	sizes  []uint16
	durs   []uint16
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
	p.durs = append(p.durs, make([]uint16, p.cap)...)
	return b
}

func (p *pool) release(b uint32) {
	p.used--
	p.free = append(p.free, b)
}

func (p *pool) block(b uint32) ([]uint32, []uint16, []uint16) {
	o := int(b) * p.cap
	return p.starts[o : o+p.cap : o+p.cap], p.sizes[o : o+p.cap : o+p.cap], p.durs[o : o+p.cap : o+p.cap]
}

// bytes returns the memory the pool holds (used or free).
func (p *pool) bytes() int64 {
	return int64(cap(p.starts))*4 + int64(cap(p.sizes))*2 + int64(cap(p.durs))*2 + int64(cap(p.free))*4
}

// pairTable is an open-addressing hash table from a pair's fingerprint to
// its index, with linear probing and backward-shift deletion, grown
// (doubled) at 3/4 load. A slot is 4 bytes: index+1 in the low 27 bits (0:
// empty) and the top 5 bits of the fingerprint as a tag, so that probing
// past other pairs rarely touches their memory (1 in 32).
//
// Fingerprints are 64-bit keyed hashes (hash/maphash, a random seed per
// detector) of the subscriber pseudonym, key epoch, remote address, port
// and protocol. The per-flow path finds a known pair with this one lookup;
// two pairs share a fingerprint with probability about n²/2^65 (3·10⁻⁶ for
// 10M pairs), which would merge their samples.
type pairTable struct {
	slots []uint32
	mask  uint64
	n     int
}

const (
	slotIndexBits = 27
	slotIndexMask = 1<<slotIndexBits - 1
	// maxPairIndex bounds the number of pairs (about 134 million).
	maxPairIndex = slotIndexMask - 1
)

func slotTag(fp uint64) uint32 { return uint32(fp>>(64-(32-slotIndexBits))) << slotIndexBits }

// init makes an empty table of at least size slots (a power of two).
func (t *pairTable) init(size int) {
	n := 1024
	for n < size {
		n <<= 1
	}
	t.slots = make([]uint32, n)
	t.mask = uint64(n - 1)
	t.n = 0
}

// find returns the slot of fingerprint fp and whether it holds the pair;
// when not, the slot is where it would be inserted.
func (t *pairTable) find(pairs *slab, fp uint64) (uint64, bool) {
	i := fp & t.mask
	tag := slotTag(fp)
	for {
		v := t.slots[i]
		if v == 0 {
			return i, false
		}
		if v&^slotIndexMask == tag && pairs.at(v&slotIndexMask-1).fp == fp {
			return i, true
		}
		i = (i + 1) & t.mask
	}
}

// index returns the pair index held by a slot.
func (t *pairTable) index(slot uint64) uint32 { return t.slots[slot]&slotIndexMask - 1 }

func (t *pairTable) insertAt(slot uint64, fp uint64, idx uint32) {
	t.slots[slot] = slotTag(fp) | (idx + 1)
	t.n++
}

// remove deletes the pair at index idx (which must be present).
func (t *pairTable) remove(pairs *slab, idx uint32) {
	i, ok := t.find(pairs, pairs.at(idx).fp)
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
		home := pairs.at(v&slotIndexMask-1).fp & t.mask
		// Move the entry into the hole at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j)) {
			t.slots[i] = v
			i = j
		}
	}
	t.slots[i] = 0
}

// grow doubles the table.
func (t *pairTable) grow(pairs *slab) {
	old := t.slots
	t.init(2 * len(old))
	for _, v := range old {
		if v == 0 {
			continue
		}
		i := pairs.at(v&slotIndexMask-1).fp & t.mask
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

// durUnknown marks a sample whose flow duration is not known: a flow
// whose end precedes its start, or a connection start that was kept inline
// (pairs keep durations only in sample blocks; see pair).
const durUnknown = 0xffff

// encodeDur packs a flow duration in milliseconds like encodeSize: exact
// below 32.768 s, then within 0.1%; never durUnknown.
func encodeDur(ms uint64) uint16 { return min(encodeSize(ms), durUnknown-1) }

// decodeDur returns a duration in milliseconds, and false when unknown.
func decodeDur(v uint16) (float64, bool) {
	if v == durUnknown {
		return 0, false
	}
	return decodeSize(v), true
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
