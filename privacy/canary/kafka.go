package canary

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"

	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// KafkaSuffix names raw Kafka record batches for the KafkaBatches decoder:
// scan the bytes a Fetch response carries for one partition (or a log
// segment file's content) as ScanBytes("TOPIC-PARTITION"+KafkaSuffix, b).
const KafkaSuffix = ".kafka"

// Kafka record batch (message format v2) layout: the fixed header is
// baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic
// int8, crc uint32, then (covered by the CRC) attributes int16,
// lastOffsetDelta int32, baseTimestamp int64, maxTimestamp int64,
// producerId int64, producerEpoch int16, baseSequence int32, records int32.
const (
	kafkaBatchHeader = 61
	kafkaMagicOffset = 16
	kafkaCRCStart    = 21
	kafkaAttrOffset  = 21
	kafkaCountOffset = 57
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// KafkaBatches decodes raw Kafka record batches (message format v2, as a
// Fetch response returns them for a partition and as the broker stores
// them), matched by the name suffix KafkaSuffix. For every batch it checks
// the CRC, decompresses the records (gzip, snappy raw or xerial-framed,
// lz4, zstd) and emits every record's key, value, and each header's name
// and value as parts of their own ("o<offset>.key", "o<offset>.value",
// "o<offset>.h<i>.<name>"); the values are then decoded further (a bus
// message is a zstd frame holding an Arrow IPC stream). The raw bytes are
// searched too (headers in the clear, uncompressed records). A partial
// batch at the end (a Fetch response cut at its size limit) is skipped;
// anything else malformed is an error. c, if not nil, counts batches
// (Inputs) and records (Records).
func KafkaBatches(c *Counts) Decoder {
	if c == nil {
		c = new(Counts)
	}
	return Decoder{
		Name:  "kafka",
		Match: func(name string, _ []byte) bool { return strings.HasSuffix(name, KafkaSuffix) },
		Decode: func(r io.Reader, emit func(string, []byte) error) error {
			data, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			return decodeKafka(data, c, emit)
		},
	}
}

func decodeKafka(b []byte, c *Counts, emit func(string, []byte) error) error {
	for len(b) > 0 {
		if len(b) < 12 {
			return nil // partial batch at the end of a fetch
		}
		base := int64(binary.BigEndian.Uint64(b))
		n := int64(int32(binary.BigEndian.Uint32(b[8:])))
		if n < kafkaBatchHeader-12 {
			return fmt.Errorf("kafka batch at offset %d: length %d", base, n)
		}
		if int64(len(b)) < 12+n {
			return nil // partial batch
		}
		batch := b[:12+n]
		b = b[12+n:]
		if batch[kafkaMagicOffset] != 2 {
			return fmt.Errorf("kafka batch at offset %d: message format %d, want 2", base, batch[kafkaMagicOffset])
		}
		if got, want := crc32.Checksum(batch[kafkaCRCStart:], crc32c), binary.BigEndian.Uint32(batch[17:]); got != want {
			return fmt.Errorf("kafka batch at offset %d: CRC %08x, want %08x", base, got, want)
		}
		attrs := binary.BigEndian.Uint16(batch[kafkaAttrOffset:])
		count := int(int32(binary.BigEndian.Uint32(batch[kafkaCountOffset:])))
		recs, err := kafkaDecompress(attrs&7, batch[kafkaBatchHeader:])
		if err != nil {
			return fmt.Errorf("kafka batch at offset %d: %w", base, err)
		}
		c.Inputs++
		if attrs&7 != 0 {
			if err := emit(fmt.Sprintf("o%d.records", base), recs); err != nil {
				return err
			}
		}
		for i := 0; i < count; i++ {
			if recs, err = kafkaRecord(recs, base, c, emit); err != nil {
				return fmt.Errorf("kafka batch at offset %d, record %d: %w", base, i, err)
			}
		}
		if len(recs) != 0 {
			return fmt.Errorf("kafka batch at offset %d: %d bytes after %d records", base, len(recs), count)
		}
	}
	return nil
}

// errKafkaShort reports a record cut short.
var errKafkaShort = errors.New("truncated record")

// kafkaRecord decodes one record at the start of b, emits its parts and
// returns the rest of b.
func kafkaRecord(b []byte, base int64, c *Counts, emit func(string, []byte) error) ([]byte, error) {
	length, n := binary.Varint(b)
	if n <= 0 || length < 0 || int64(len(b)-n) < length {
		return nil, errKafkaShort
	}
	rest := b[n+int(length):]
	r := b[n : n+int(length)]
	if len(r) < 1 {
		return nil, errKafkaShort
	}
	r = r[1:] // attributes
	var ok bool
	if _, r, ok = kafkaVarint(r); !ok { // timestamp delta
		return nil, errKafkaShort
	}
	var delta int64
	if delta, r, ok = kafkaVarint(r); !ok {
		return nil, errKafkaShort
	}
	where := fmt.Sprintf("o%d", base+delta)
	var key, value []byte
	if key, r, ok = kafkaBytes(r); !ok {
		return nil, errKafkaShort
	}
	if value, r, ok = kafkaBytes(r); !ok {
		return nil, errKafkaShort
	}
	nh, r, ok := kafkaVarint(r)
	if !ok || nh < 0 {
		return nil, errKafkaShort
	}
	c.Records++
	if key != nil {
		if err := emit(where+".key", key); err != nil {
			return nil, err
		}
	}
	if value != nil {
		if err := emit(where+".value", value); err != nil {
			return nil, err
		}
	}
	for i := int64(0); i < nh; i++ {
		var hk, hv []byte
		if hk, r, ok = kafkaBytes(r); !ok {
			return nil, errKafkaShort
		}
		if hv, r, ok = kafkaBytes(r); !ok {
			return nil, errKafkaShort
		}
		// The name is emitted as a part too: nothing may hide in it.
		if err := emit(fmt.Sprintf("%s.h%d.name", where, i), hk); err != nil {
			return nil, err
		}
		if hv != nil {
			if err := emit(fmt.Sprintf("%s.h%d.value", where, i), hv); err != nil {
				return nil, err
			}
		}
	}
	if len(r) != 0 {
		return nil, fmt.Errorf("%d bytes after the headers", len(r))
	}
	return rest, nil
}

func kafkaVarint(b []byte) (int64, []byte, bool) {
	v, n := binary.Varint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}

// kafkaBytes reads a varint length (-1: null) and that many bytes.
func kafkaBytes(b []byte) ([]byte, []byte, bool) {
	n, b, ok := kafkaVarint(b)
	if !ok || n < -1 || n > int64(len(b)) {
		return nil, nil, false
	}
	if n == -1 {
		return nil, b, true
	}
	return b[:n:n], b[n:], true
}

// xerialHeader starts snappy data in the framing of snappy-java, which the
// Java client and kafka-go use for Kafka batches.
var xerialHeader = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// kafkaDecompress undoes a batch's compression codec (attributes & 7).
func kafkaDecompress(codec uint16, b []byte) ([]byte, error) {
	switch codec {
	case 0:
		return b, nil
	case 1:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return io.ReadAll(zr)
	case 2:
		if !bytes.HasPrefix(b, xerialHeader) {
			return snappy.Decode(nil, b)
		}
		if len(b) < 16 {
			return nil, errors.New("snappy: short xerial header")
		}
		var out []byte
		for b = b[16:]; len(b) > 0; {
			if len(b) < 4 {
				return nil, errors.New("snappy: truncated xerial chunk")
			}
			n := binary.BigEndian.Uint32(b)
			if uint64(n) > uint64(len(b)-4) {
				return nil, errors.New("snappy: truncated xerial chunk")
			}
			chunk, err := snappy.Decode(nil, b[4:4+n])
			if err != nil {
				return nil, fmt.Errorf("snappy: %w", err)
			}
			out = append(out, chunk...)
			b = b[4+n:]
		}
		return out, nil
	case 3:
		return io.ReadAll(lz4.NewReader(bytes.NewReader(b)))
	case 4:
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		return io.ReadAll(zr)
	}
	return nil, fmt.Errorf("unknown compression codec %d", codec)
}
