package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/ccflow/ccflow/collector/archive"
	"github.com/ccflow/ccflow/flow"
)

// defaultReorder is the default --reorder: flows held to restore time
// order, about 150 MB. CTU-13's Argus file needs 7,430 (its flows are
// written per time bin), a Zeek log as many as it has connections open at
// once.
const defaultReorder = 1 << 20

// minReorderPerFile is the least reorder buffer of one file, however many
// files share --reorder.
const minReorderPerFile = 1024

// mergedSources replays several archives as one stream in start-time
// order: each file through a reorder buffer (a min-heap of its next flows),
// the files merged by their earliest buffered flow. Memory is bounded by
// the buffers, not by the archives.
type mergedSources struct {
	srcs  []*replaySource
	opts  *replayOptions
	shift int64 // added to every time once known (--start)
	// shifted says that shift is known: it is taken from the first flow
	// released, the earliest of the first buffers.
	shifted bool
	last    int64 // newest start released so far
	late    int   // flows released after a newer one: beyond the buffer
	read    int   // flows read from the files, before filters
}

// replaySource is one archive and its reorder buffer.
type replaySource struct {
	path string
	r    archive.Reader
	rng  *rand.Rand // --sample, seeded per file
	heap []heapRec
	cap  int
	seq  uint64
	eof  bool
}

type heapRec struct {
	rec flow.Record
	seq uint64 // read order, for a stable order of equal start times
}

func (a *heapRec) less(b *heapRec) bool {
	if a.rec.TimeStartMs != b.rec.TimeStartMs {
		return a.rec.TimeStartMs < b.rec.TimeStartMs
	}
	return a.seq < b.seq
}

// openSources opens every file of opts; on error, the ones opened are
// closed.
func openSources(opts replayOptions) (*mergedSources, error) {
	m := &mergedSources{opts: &opts, last: math.MinInt64}
	per := max(minReorderPerFile, opts.reorder/max(1, len(opts.files)))
	for i, path := range opts.files {
		r, err := archive.Open(path, opts.format, archive.Options{Mapping: opts.mapping})
		if err != nil {
			m.close()
			return nil, err
		}
		s := &replaySource{path: path, r: r, cap: per}
		if opts.sample > 1 {
			// One generator per file, so that a file's sample does not
			// depend on how the merge interleaves the files; the first
			// file's is the generator of earlier versions.
			s.rng = rand.New(rand.NewPCG(opts.seed, 0x5a5a+uint64(i)))
		}
		m.srcs = append(m.srcs, s)
	}
	return m, nil
}

func (m *mergedSources) close() {
	for _, s := range m.srcs {
		_ = s.r.Close()
	}
}

// next appends up to n flows, in start-time order as far as the buffers
// allow, to dst; it returns dst unchanged at the end of all files.
func (m *mergedSources) next(dst []flow.Record, n int) ([]flow.Record, error) {
	for len(dst) < n {
		var best *replaySource
		for _, s := range m.srcs {
			if err := s.fill(m); err != nil {
				return dst, err
			}
			if len(s.heap) > 0 && (best == nil || s.heap[0].rec.TimeStartMs < best.heap[0].rec.TimeStartMs) {
				best = s
			}
		}
		if best == nil {
			return dst, nil
		}
		rec := best.pop()
		if !m.shifted {
			m.shifted = true
			if !m.opts.start.IsZero() {
				m.shift = m.opts.start.UnixMilli() - rec.TimeStartMs
			}
		}
		if m.shift != 0 {
			rec.TimeStartMs += m.shift
			rec.TimeEndMs += m.shift
			if rec.TimeReceivedMs != 0 {
				rec.TimeReceivedMs += m.shift
			}
		}
		if rec.TimeStartMs < m.last {
			m.late++
		} else {
			m.last = rec.TimeStartMs
		}
		dst = append(dst, rec)
	}
	return dst, nil
}

// fill reads flows until the buffer is full or the file ends, dropping
// labelled flows and thinning for --sample.
func (s *replaySource) fill(m *mergedSources) error {
	for !s.eof && len(s.heap) < s.cap {
		var rec flow.Record
		if err := s.r.Next(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				s.eof = true
				return nil
			}
			return fmt.Errorf("%s: %w", s.path, err)
		}
		m.read++
		if dropLabel(s.r.Label(), m.opts.dropLabels) {
			continue
		}
		if s.rng != nil {
			if s.rng.IntN(m.opts.sample) != 0 {
				continue
			}
			rec.SamplingRate = max(1, rec.SamplingRate) * uint32(m.opts.sample)
		}
		s.push(heapRec{rec: rec, seq: s.seq})
		s.seq++
	}
	return nil
}

func (s *replaySource) push(x heapRec) {
	h := append(s.heap, x)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].less(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	s.heap = h
}

func (s *replaySource) pop() flow.Record {
	h := s.heap
	top := h[0].rec
	n := len(h) - 1
	h[0] = h[n]
	h[n] = heapRec{} // raw addresses: do not keep them
	h = h[:n]
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && h[r].less(&h[l]) {
			c = r
		}
		if !h[c].less(&h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	s.heap = h
	return top
}
