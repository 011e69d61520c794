package detect

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"

	"github.com/axiomhq/hyperloglog"
)

// Checkpoint format, version 3 (all integers little-endian):
//
//	magic "CCFLOWDT", uint32 version
//	config: window ms, hop ms (int64), sample size (uint32)
//	clock: started (uint8), base, maxStart, dataFrom, nextEval, lowWater, lastEval (int64)
//	subscribers: uint32 count, then per subscriber: pseudonym [16], epoch uint32
//	endpoints: uint32 count, then per endpoint: address [16], port uint16, proto uint8,
//	  hasBase uint8, baseline float32, asn uint32, four strings (uvarint length + bytes:
//	  AS organization, country, provider class, intel lists),
//	  uint32 sketch count, then per sketch: hop int64, uvarint length + HyperLogLog bytes
//	pairs: uint32 count, then per pair: subscriber and endpoint ordinals (uint32, in the
//	  order written above), first, last, flows, bytes/16 (uint32), end delta (uint16, 100 ms), rate,
//	  lastPort (uint16), score uint8, flags uint8 (version 2: bit 2 = the pair exchanged data),
//	  n uint8, then n × (start uint32, size uint16, duration uint16 (version 3; encodeDur,
//	  0xffff unknown))
//	trailer: CRC-32 (IEEE) of everything before it
//
// Times are offsets from base, as in memory. A checkpoint restores only
// into a detector with the same window, hop and sample size. Versions 1
// (without the pair flags: its pairs count as having exchanged data) and
// 2 (without durations: they are unknown, and the idle time between the
// restored connections is not measured) are still read.

// ErrCheckpoint is wrapped by every error Restore returns for a damaged,
// foreign or incompatible checkpoint.
var ErrCheckpoint = errors.New("detect: bad checkpoint")

var _ io.Writer = (*countWriter)(nil)

const (
	checkpointMagic   = "CCFLOWDT"
	checkpointVersion = 3
)

// countWriter counts bytes and keeps the first error.
type countWriter struct {
	w   *bufio.Writer
	h   hash.Hash32
	n   int64
	err error
	buf [binary.MaxVarintLen64]byte
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	c.err = err
	return n, err
}

func (c *countWriter) u8(v uint8) { c.buf[0] = v; _, _ = c.Write(c.buf[:1]) }
func (c *countWriter) u16(v uint16) {
	binary.LittleEndian.PutUint16(c.buf[:], v)
	_, _ = c.Write(c.buf[:2])
}
func (c *countWriter) u32(v uint32) {
	binary.LittleEndian.PutUint32(c.buf[:], v)
	_, _ = c.Write(c.buf[:4])
}
func (c *countWriter) u64(v uint64) {
	binary.LittleEndian.PutUint64(c.buf[:], v)
	_, _ = c.Write(c.buf[:8])
}
func (c *countWriter) i64(v int64) { c.u64(uint64(v)) }
func (c *countWriter) bytes(b []byte) {
	n := binary.PutUvarint(c.buf[:], uint64(len(b)))
	_, _ = c.Write(c.buf[:n])
	_, _ = c.Write(b)
}
func (c *countWriter) str(s string) { c.bytes([]byte(s)) }

// Checkpoint writes the detector's state to w, so that Restore resumes
// its windows (results not yet taken with Results are not included). It
// returns the number of bytes written. The bus commits its offsets only
// after a checkpoint succeeded.
func (d *Detector) Checkpoint(w io.Writer) (int64, error) {
	c := &countWriter{w: bufio.NewWriterSize(w, 1<<16), h: crc32.NewIEEE()}
	_, _ = c.Write([]byte(checkpointMagic))
	c.u32(checkpointVersion)
	c.i64(d.cfg.Window.Milliseconds())
	c.i64(d.cfg.Hop.Milliseconds())
	c.u32(uint32(d.cfg.SampleSize))
	if d.started {
		c.u8(1)
	} else {
		c.u8(0)
	}
	for _, v := range []int64{d.base, d.maxStart, d.dataFrom, d.nextEval, d.lowWater, d.lastEval} {
		c.i64(v)
	}
	// Ordinals: live entries numbered in slab order.
	subOrd := make([]uint32, len(d.subs))
	var nsub uint32
	for i := range d.subs {
		if d.subs[i].live {
			subOrd[i] = nsub
			nsub++
		}
	}
	c.u32(nsub)
	for i := range d.subs {
		s := &d.subs[i]
		if s.live {
			_, _ = c.Write(s.key.p[:])
			c.u32(s.key.epoch)
		}
	}
	epOrd := make([]uint32, len(d.eps))
	var nep uint32
	for i := range d.eps {
		if d.eps[i].key != (epKey{}) {
			epOrd[i] = nep
			nep++
		}
	}
	c.u32(nep)
	for i := range d.eps {
		e := &d.eps[i]
		if e.key == (epKey{}) {
			continue
		}
		_, _ = c.Write(e.key.addr[:])
		c.u16(e.key.port)
		c.u8(e.key.proto)
		if e.hasBase {
			c.u8(1)
		} else {
			c.u8(0)
		}
		c.u32(math.Float32bits(e.baseline))
		var info enrichment
		if e.info != nil {
			info = *e.info
		}
		c.u32(info.asn)
		c.str(info.asOrg)
		c.str(info.country)
		c.str(info.prov)
		c.str(info.intl)
		var nsk uint32
		if e.sk != nil {
			for _, sk := range e.sk.sketches {
				if sk != nil {
					nsk++
				}
			}
		}
		c.u32(nsk)
		for j := 0; nsk > 0 && j < len(e.sk.sketches); j++ {
			sk := e.sk.sketches[j]
			if sk == nil {
				continue
			}
			b, err := sk.MarshalBinary()
			if err != nil {
				return c.n, fmt.Errorf("checkpoint: encode sketch: %w", err)
			}
			c.i64(e.sk.at[j])
			c.bytes(b)
		}
	}
	c.u32(uint32(d.npairs))
	for i := range uint32(d.ps.n) {
		p := d.ps.at(i)
		if p.flags&pairLive == 0 {
			continue
		}
		c.u32(subOrd[p.sub])
		c.u32(epOrd[p.ep])
		c.u32(p.first)
		c.u32(p.last)
		c.u32(p.flows)
		c.u32(p.bytes16)
		c.u16(p.endDelta)
		c.u16(p.rate)
		c.u16(p.lastPort)
		c.u8(p.score)
		c.u8(p.flags & pairData)
		c.u8(p.n)
		s, z, u := d.samples(p)
		for j := range s {
			c.u32(s[j])
			c.u16(z[j])
			if u != nil {
				c.u16(u[j])
			} else {
				c.u16(durUnknown)
			}
		}
	}
	sum := c.h.Sum32()
	binary.LittleEndian.PutUint32(c.buf[:], sum)
	if c.err == nil {
		if _, err := c.w.Write(c.buf[:4]); err != nil {
			c.err = err
		}
		c.n += 4
	}
	if c.err == nil {
		c.err = c.w.Flush()
	}
	if c.err != nil {
		return c.n, fmt.Errorf("checkpoint: write: %w", c.err)
	}
	return c.n, nil
}

// countReader reads the checkpoint primitives and keeps the first error.
type countReader struct {
	r   *bufio.Reader
	h   hash.Hash32
	err error
	buf [8]byte
}

func (c *countReader) full(p []byte) {
	if c.err != nil {
		return
	}
	if _, err := io.ReadFull(c.r, p); err != nil {
		c.err = err
		return
	}
	c.h.Write(p)
}
func (c *countReader) u8() uint8   { c.full(c.buf[:1]); return c.buf[0] }
func (c *countReader) u16() uint16 { c.full(c.buf[:2]); return binary.LittleEndian.Uint16(c.buf[:]) }
func (c *countReader) u32() uint32 { c.full(c.buf[:4]); return binary.LittleEndian.Uint32(c.buf[:]) }
func (c *countReader) u64() uint64 { c.full(c.buf[:8]); return binary.LittleEndian.Uint64(c.buf[:]) }
func (c *countReader) i64() int64  { return int64(c.u64()) }
func (c *countReader) ReadByte() (byte, error) {
	if c.err != nil {
		return 0, c.err
	}
	b, err := c.r.ReadByte()
	if err != nil {
		c.err = err
		return 0, err
	}
	c.h.Write([]byte{b})
	return b, nil
}
func (c *countReader) bytes(limit int) []byte {
	n, err := binary.ReadUvarint(c)
	if err != nil || n > uint64(limit) {
		if c.err == nil {
			c.err = errors.New("length out of range")
		}
		return nil
	}
	b := make([]byte, n)
	c.full(b)
	return b
}

// Restore replaces the state of a freshly created detector (New, no flows
// observed) with a checkpoint written by Checkpoint. The detector's window,
// hop and sample size must be those of the checkpoint. On error the
// detector is left empty.
func (d *Detector) Restore(r io.Reader) error {
	if d.started || d.npairs > 0 {
		return errors.New("detect: restore into a detector that has state")
	}
	err := d.restore(r)
	if err != nil {
		fresh, _ := New(d.cfg, Deps{Logger: d.log, Allowlist: d.allow})
		met := d.met
		*d = *fresh
		d.met = met
		return fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	d.publish()
	return nil
}

func (d *Detector) restore(r io.Reader) error {
	c := &countReader{r: bufio.NewReaderSize(r, 1<<16), h: crc32.NewIEEE()}
	magic := make([]byte, len(checkpointMagic))
	c.full(magic)
	if c.err != nil || string(magic) != checkpointMagic {
		return errors.New("not a detector checkpoint")
	}
	version := c.u32()
	if version < 1 || version > checkpointVersion {
		return fmt.Errorf("unsupported checkpoint version %d (want 1 to %d)", version, checkpointVersion)
	}
	w, h, ss := c.i64(), c.i64(), c.u32()
	if c.err == nil && (w != d.cfg.Window.Milliseconds() || h != d.cfg.Hop.Milliseconds() || int(ss) != d.cfg.SampleSize) {
		return fmt.Errorf("checkpoint was written with window %dms, hop %dms, sample size %d; configuration has %s, %s, %d",
			w, h, ss, d.cfg.Window, d.cfg.Hop, d.cfg.SampleSize)
	}
	d.started = c.u8() == 1
	d.base, d.maxStart, d.dataFrom = c.i64(), c.i64(), c.i64()
	d.nextEval, d.lowWater, d.lastEval = c.i64(), c.i64(), c.i64()
	const maxEntries = 1 << 30
	nsub := c.u32()
	if nsub > maxEntries {
		return errors.New("subscriber count out of range")
	}
	subs := make([]uint32, 0, min(nsub, 1<<20))
	var f struct {
		k subKey
	}
	for i := uint32(0); i < nsub && c.err == nil; i++ {
		c.full(f.k.p[:])
		f.k.epoch = c.u32()
		idx := uint32(len(d.subs))
		d.subs = append(d.subs, sub{key: f.k, live: true})
		d.subIdx[f.k] = idx
		subs = append(subs, idx)
	}
	nep := c.u32()
	if nep > maxEntries {
		return errors.New("endpoint count out of range")
	}
	eps := make([]uint32, 0, min(nep, 1<<20))
	for i := uint32(0); i < nep && c.err == nil; i++ {
		var e endpoint
		c.full(e.key.addr[:])
		e.key.port = c.u16()
		e.key.proto = c.u8()
		e.hasBase = c.u8() == 1
		e.baseline = math.Float32frombits(c.u32())
		var info enrichment
		info.asn = c.u32()
		info.asOrg = string(c.bytes(1 << 16))
		info.country = string(c.bytes(1 << 16))
		info.prov = string(c.bytes(1 << 16))
		info.intl = string(c.bytes(1 << 20))
		e.info = d.intern(info)
		nsk := c.u32()
		if nsk > 0 {
			if int(nsk) > d.sketchHops() {
				return errors.New("sketch count out of range")
			}
			e.sk = d.newSketchSet()
			for j := uint32(0); j < nsk && c.err == nil; j++ {
				hop := c.i64()
				b := c.bytes(1 << 24)
				sk := &hyperloglog.Sketch{}
				if c.err == nil {
					if err := sk.UnmarshalBinary(b); err != nil {
						return fmt.Errorf("decode sketch: %w", err)
					}
				}
				slot := int(uint64(hop) % uint64(len(e.sk.sketches)))
				e.sk.sketches[slot], e.sk.at[slot] = sk, hop
				d.sketchB += 1 << sketchPrecision
			}
		}
		idx := uint32(len(d.eps))
		d.eps = append(d.eps, e)
		d.epIdx[e.key] = idx
		eps = append(eps, idx)
	}
	np := c.u32()
	if np > maxEntries {
		return errors.New("pair count out of range")
	}
	for i := uint32(0); i < np && c.err == nil; i++ {
		so, eo := c.u32(), c.u32()
		if c.err == nil && (int(so) >= len(subs) || int(eo) >= len(eps)) {
			return errors.New("pair refers to an unknown subscriber or endpoint")
		}
		first, last, flows, bytes16 := c.u32(), c.u32(), c.u32(), c.u32()
		endDelta := c.u16()
		rate, lastPort := c.u16(), c.u16()
		score := c.u8()
		flags := pairData
		if version >= 2 {
			flags = c.u8() & pairData
		}
		n := c.u8()
		if c.err != nil {
			break
		}
		if int(n) > d.cfg.SampleSize {
			return errors.New("pair sample larger than sample size")
		}
		s, e := subs[so], eps[eo]
		k := pairKey{sub: d.subs[s].key.p, ep: d.eps[e].key, epoch: d.subs[s].key.epoch}
		fp := d.fingerprint(&k) | 1
		slot, dup := d.table.find(&d.ps, fp)
		if dup {
			return errors.New("duplicate pair")
		}
		pi := d.newPair(s, e, fp, slot)
		p := d.ps.at(pi)
		p.first, p.last, p.flows, p.bytes16, p.endDelta = first, last, flows, bytes16, endDelta
		p.rate, p.lastPort, p.score = rate, lastPort, score
		p.flags |= flags
		var durs [256]uint16
		for j := uint8(0); j < n && c.err == nil; j++ {
			t, z, u := c.u32(), c.u16(), uint16(durUnknown)
			if version >= 3 {
				u = c.u16()
			}
			durs[j] = u
			d.addSample(p, t, z, u)
		}
		// Samples restored inline and then moved into a block lost
		// their durations on the way: put them back.
		if _, _, u := d.samples(p); u != nil && c.err == nil {
			copy(u, durs[:len(u)])
		}
	}
	if c.err != nil {
		return fmt.Errorf("read: %w", c.err)
	}
	want := c.h.Sum32()
	var tail [4]byte
	if _, err := io.ReadFull(c.r, tail[:]); err != nil {
		return fmt.Errorf("read checksum: %w", err)
	}
	if binary.LittleEndian.Uint32(tail[:]) != want {
		return errors.New("checksum mismatch")
	}
	return nil
}
