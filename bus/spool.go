package bus

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/segmentio/kafka-go"
)

// spool is a bounded, on-disk FIFO of Kafka messages: segment files
// spool-<seq>.seg of length-prefixed, CRC-checked records. Appends go to
// the newest segment; the drainer reads the oldest one whole (segments are
// at most segBytes), and a segment file is deleted once all of its messages
// are acknowledged. After a crash, records of a segment that were sent but
// not yet deleted are sent again (at-least-once; batch IDs deduplicate).
// A torn record at the end of a segment is skipped. Goroutine-safe.
type spool struct {
	dir      string
	maxBytes int64
	segBytes int64

	mu       sync.Mutex
	segs     []segment // oldest first; the last one may be open for writing
	w        *os.File  // open newest segment, or nil
	wbuf     *bufio.Writer
	nextSeq  uint64
	bytes    int64 // on disk
	messages int   // not yet acknowledged
	head     []kafka.Message
	headSeg  uint64 // segment the head was read from
	headOK   bool   // head holds the rest of segs[0]
}

type segment struct {
	seq      uint64
	size     int64
	messages int
}

const recordHeader = 8 // uint32 length, uint32 CRC-32C of the body

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func segName(seq uint64) string { return fmt.Sprintf("spool-%020d.seg", seq) }

// openSpool opens (creating) the spool in dir and counts what it holds.
func openSpool(dir string, maxBytes, segBytes int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool directory: %w", err)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, segBytes: segBytes}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read spool directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "spool-") || !strings.HasSuffix(name, ".seg") {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "spool-"), ".seg"), 10, 64)
		if err != nil {
			continue
		}
		msgs, size, err := readSegment(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		s.segs = append(s.segs, segment{seq: seq, size: size, messages: len(msgs)})
		s.bytes += size
		s.messages += len(msgs)
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].seq < s.segs[j].seq })
	return s, nil
}

// Len returns the number of messages and bytes in the spool.
func (s *spool) Len() (messages int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.messages, s.bytes
}

// Append writes msgs in order until the spool is full; it returns how many
// it wrote. The segment is synced before Append returns.
func (s *spool) Append(msgs []kafka.Message) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range msgs {
		rec := encodeRecord(m)
		size := int64(recordHeader + len(rec))
		if s.bytes+size > s.maxBytes {
			break
		}
		if s.w != nil && s.segs[len(s.segs)-1].size+size > s.segBytes {
			if err := s.closeWriter(); err != nil {
				return n, err
			}
		}
		if s.w == nil {
			f, err := os.OpenFile(filepath.Join(s.dir, segName(s.nextSeq)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				return n, fmt.Errorf("create spool segment: %w", err)
			}
			s.w, s.wbuf = f, bufio.NewWriterSize(f, 1<<20)
			s.segs = append(s.segs, segment{seq: s.nextSeq})
			s.nextSeq++
		}
		var hdr [recordHeader]byte
		binary.LittleEndian.PutUint32(hdr[:4], uint32(len(rec)))
		binary.LittleEndian.PutUint32(hdr[4:], crc32.Checksum(rec, crcTable))
		if _, err := s.wbuf.Write(hdr[:]); err != nil {
			return n, fmt.Errorf("write spool: %w", err)
		}
		if _, err := s.wbuf.Write(rec); err != nil {
			return n, fmt.Errorf("write spool: %w", err)
		}
		last := &s.segs[len(s.segs)-1]
		last.size += size
		last.messages++
		s.bytes += size
		s.messages++
		n++
	}
	if s.w != nil {
		if err := s.wbuf.Flush(); err != nil {
			return n, fmt.Errorf("write spool: %w", err)
		}
		if err := s.w.Sync(); err != nil {
			return n, fmt.Errorf("sync spool: %w", err)
		}
	}
	return n, nil
}

func (s *spool) closeWriter() error {
	if s.w == nil {
		return nil
	}
	err := s.wbuf.Flush()
	if cerr := s.w.Close(); err == nil {
		err = cerr
	}
	s.w, s.wbuf = nil, nil
	if err != nil {
		return fmt.Errorf("close spool segment: %w", err)
	}
	return nil
}

// Peek returns up to max messages (at most maxBytes of values, but at
// least one) from the head of the spool without removing them.
func (s *spool) Peek(max int, maxBytes int) ([]kafka.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.messages == 0 {
		return nil, nil
	}
	if !s.headOK {
		if len(s.segs) == 1 && s.w != nil {
			// Reading the segment being written: close it first.
			if err := s.closeWriter(); err != nil {
				return nil, err
			}
		}
		seg := s.segs[0]
		msgs, _, err := readSegment(filepath.Join(s.dir, segName(seg.seq)))
		if err != nil {
			return nil, err
		}
		if len(msgs) != seg.messages {
			// Torn records: account for what is readable.
			s.messages -= seg.messages - len(msgs)
			s.segs[0].messages = len(msgs)
		}
		s.head, s.headSeg, s.headOK = msgs, seg.seq, true
		if len(msgs) == 0 {
			return nil, s.dropHeadSegment()
		}
	}
	n, b := 0, 0
	for n < len(s.head) && n < max && (n == 0 || b+len(s.head[n].Value) <= maxBytes) {
		b += len(s.head[n].Value)
		n++
	}
	return s.head[:n:n], nil
}

// Ack removes the first n messages returned by Peek.
func (s *spool) Ack(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.headOK || n > len(s.head) {
		return errors.New("spool: ack without peek")
	}
	s.head = s.head[n:]
	s.messages -= n
	s.segs[0].messages -= n
	if len(s.head) == 0 {
		return s.dropHeadSegment()
	}
	return nil
}

// dropHeadSegment deletes the oldest segment; s.mu must be held.
func (s *spool) dropHeadSegment() error {
	seg := s.segs[0]
	s.segs = s.segs[1:]
	s.bytes -= seg.size
	s.messages -= seg.messages
	s.head, s.headOK = nil, false
	if err := os.Remove(filepath.Join(s.dir, segName(seg.seq))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove spool segment: %w", err)
	}
	return nil
}

// Close closes the open segment.
func (s *spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeWriter()
}

// encodeRecord serializes key, headers and value of m.
func encodeRecord(m kafka.Message) []byte {
	n := 4 + len(m.Key) + 4 + 4 + len(m.Value)
	for _, h := range m.Headers {
		n += 8 + len(h.Key) + len(h.Value)
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Key)))
	b = append(b, m.Key...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Headers)))
	for _, h := range m.Headers {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(h.Value)))
		b = append(b, h.Value...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Value)))
	return append(b, m.Value...)
}

var errBadRecord = errors.New("malformed spool record")

func decodeRecord(b []byte) (kafka.Message, error) {
	var m kafka.Message
	next := func() ([]byte, error) {
		if len(b) < 4 {
			return nil, errBadRecord
		}
		l := int(binary.LittleEndian.Uint32(b))
		if l < 0 || len(b)-4 < l {
			return nil, errBadRecord
		}
		v := b[4 : 4+l]
		b = b[4+l:]
		return v, nil
	}
	var err error
	if m.Key, err = next(); err != nil {
		return m, err
	}
	if len(b) < 4 {
		return m, errBadRecord
	}
	nh := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if nh > len(b)/8 {
		return m, errBadRecord
	}
	for i := 0; i < nh; i++ {
		k, err := next()
		if err != nil {
			return m, err
		}
		v, err := next()
		if err != nil {
			return m, err
		}
		m.Headers = append(m.Headers, kafka.Header{Key: string(k), Value: v})
	}
	if m.Value, err = next(); err != nil {
		return m, err
	}
	if len(b) != 0 {
		return m, errBadRecord
	}
	return m, nil
}

// readSegment reads every intact record of a segment file; it stops at the
// first torn or corrupt record. size is the file's size.
func readSegment(path string) ([]kafka.Message, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read spool segment: %w", err)
	}
	return parseSegment(data), int64(len(data)), nil
}

// parseSegment returns the intact records at the start of a segment's
// bytes: it stops at the first torn or corrupt record.
func parseSegment(data []byte) []kafka.Message {
	var msgs []kafka.Message
	b := data
	for len(b) >= recordHeader {
		l := int(binary.LittleEndian.Uint32(b))
		if l > len(b)-recordHeader {
			break
		}
		rec := b[recordHeader : recordHeader+l]
		if crc32.Checksum(rec, crcTable) != binary.LittleEndian.Uint32(b[4:]) {
			break
		}
		m, err := decodeRecord(rec)
		if err != nil {
			break
		}
		msgs = append(msgs, m)
		b = b[recordHeader+l:]
	}
	return msgs
}

var _ io.Closer = (*spool)(nil)
