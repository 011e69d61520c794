// Package canary searches test outputs for canary subscriber addresses in
// every byte form they could take (privacy invariant P1's canary test).
//
// A canary test plants subscriber addresses (use documentation ranges:
// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), runs the
// pipeline, and scans everything the run produced with a Scanner: files,
// directories, captured logs, metrics pages, bus messages. Compressed and
// encoded outputs hide bytes from a plain search, so the Scanner decodes them
// first through pluggable Decoders chosen by file name and magic bytes;
// gzip, zstd and lz4 frames are built in (NewScanner), and ArrowIPC,
// Parquet and KafkaBatches decode the pipeline's own formats (bus messages
// and flow streams, Parquet sink files, raw Kafka record batches) when a
// test adds them with AddDecoder; their Counts prove that a scan decoded
// what the run produced.
//
// The package is test infrastructure: production code must not import it.
// It reads the outputs of a test's own run: the Arrow and Parquet readers
// trust the lengths inside inputs that are not ccflow flow streams, so a
// damaged file can make them allocate what it claims.
package canary

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Form is one byte form of a canary address.
type Form struct {
	// Name says which form ("ipv4-binary", "ipv4-dotted", "ipv6-hex-upper", ...).
	Name string
	// Bytes is the form's bytes.
	Bytes []byte
	// Text marks textual forms: a match counts only when the bytes next to
	// it do not continue the same token (so 192.0.2.1 does not match inside
	// 192.0.2.10, nor c0000201 inside a longer hex string). Pick canaries
	// whose text is not a prefix of other addresses in the test.
	Text bool
	// class is the alphabet of a textual form's token.
	class func(byte) bool
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// isAddrText is the alphabet that continues an address's text form: a
// neighbouring hex digit makes it a different token (192.0.2.1 inside
// 192.0.2.10). Separators ('.', ':', '[') do not, so "192.0.2.7:53" and
// tcpdump's "192.0.2.7.53" are hits.
func isAddrText(c byte) bool { return isHex(c) }

// Forms returns every byte form of a: for IPv4 (or IPv4-mapped) addresses
// the 4-byte binary in network and little-endian order, the 16-byte
// IPv4-mapped binary, dotted text, IPv4-mapped text in both notations, the
// decimal integer, hex of the 4 and 16 bytes in both cases, and the decimal
// byte lists that encoding/json and fmt print for byte arrays; for IPv6 the
// 16-byte binary, compressed and expanded text in both cases, hex in both
// cases, and the decimal byte lists.
func Forms(a netip.Addr) []Form {
	a = a.Unmap()
	var out []Form
	add := func(name string, b []byte, class func(byte) bool) {
		for _, f := range out {
			if bytes.Equal(f.Bytes, b) {
				return
			}
		}
		out = append(out, Form{Name: name, Bytes: b, Text: class != nil, class: class})
	}
	a16 := a.As16()
	if a.Is4() {
		a4 := a.As4()
		le := [4]byte{a4[3], a4[2], a4[1], a4[0]}
		mapped := netip.AddrFrom16(a16)
		add("ipv4-binary", a4[:], nil)
		add("ipv4-binary-le", le[:], nil)
		add("ipv4-mapped-binary", a16[:], nil)
		add("ipv4-dotted", []byte(a.String()), isAddrText)
		add("ipv4-mapped-text", []byte(mapped.String()), isAddrText)
		add("ipv4-mapped-text-hex", []byte(fmt.Sprintf("::ffff:%x:%x", binary.BigEndian.Uint16(a4[:2]), binary.BigEndian.Uint16(a4[2:]))), isAddrText)
		add("ipv4-mapped-text-upper", []byte(strings.ToUpper(fmt.Sprintf("::ffff:%x:%x", binary.BigEndian.Uint16(a4[:2]), binary.BigEndian.Uint16(a4[2:])))), isAddrText)
		add("ipv4-decimal", []byte(strconv.FormatUint(uint64(binary.BigEndian.Uint32(a4[:])), 10)), isDigit)
		add("ipv4-hex", []byte(hex.EncodeToString(a4[:])), isHex)
		add("ipv4-hex-upper", []byte(strings.ToUpper(hex.EncodeToString(a4[:]))), isHex)
		add("ipv4-mapped-hex", []byte(hex.EncodeToString(a16[:])), isHex)
		add("ipv4-mapped-hex-upper", []byte(strings.ToUpper(hex.EncodeToString(a16[:]))), isHex)
		add("ipv4-bytes-json", byteList(a4[:], ","), isDigit)
		add("ipv4-bytes-fmt", byteList(a4[:], " "), isDigit)
		return out
	}
	add("ipv6-binary", a16[:], nil)
	add("ipv6-text", []byte(a.String()), isAddrText)
	add("ipv6-text-upper", []byte(strings.ToUpper(a.String())), isAddrText)
	add("ipv6-text-expanded", []byte(a.StringExpanded()), isAddrText)
	add("ipv6-text-expanded-upper", []byte(strings.ToUpper(a.StringExpanded())), isAddrText)
	add("ipv6-hex", []byte(hex.EncodeToString(a16[:])), isHex)
	add("ipv6-hex-upper", []byte(strings.ToUpper(hex.EncodeToString(a16[:]))), isHex)
	add("ipv6-bytes-json", byteList(a16[:], ","), isDigit)
	add("ipv6-bytes-fmt", byteList(a16[:], " "), isDigit)
	return out
}

// byteList is the decimal list of b's bytes as encoding/json ("192,0,2,7")
// and fmt ("192 0 2 7") print byte arrays.
func byteList(b []byte, sep string) []byte {
	parts := make([]string, len(b))
	for i, v := range b {
		parts[i] = strconv.Itoa(int(v))
	}
	return []byte(strings.Join(parts, sep))
}

// Decoder turns one encoded input (a compressed file, an Arrow IPC stream,
// a Parquet file, a Kafka record batch) into the byte streams it carries, so
// the Scanner can search them. Decoders must not panic on malformed input;
// they return an error, which the Scanner reports.
type Decoder struct {
	// Name names the decoder in Hit.Where ("gzip", "parquet", ...).
	Name string
	// Match reports whether the decoder handles an input with this name
	// (a file's base name, or what the caller passed to ScanBytes) and
	// these first bytes (up to 512).
	Match func(name string, head []byte) bool
	// Decode reads the whole input and calls emit once per decoded part
	// (for example one per column chunk, value or message), with a name
	// for the part; emit returns the Scanner's error, which Decode must
	// return. Parts are scanned, and decoded again if a decoder matches.
	Decode func(r io.Reader, emit func(part string, data []byte) error) error
	// Opaque means the input's own bytes carry nothing but the encoded
	// parts (a compressed stream): the Scanner then does not search the
	// raw input, whose random-looking bytes would only add false hits.
	// Formats with plain-text headers or footers (Parquet statistics) are
	// not opaque.
	Opaque bool
}

// Hit is one occurrence of a canary.
type Hit struct {
	// Addr is the canary found.
	Addr netip.Addr
	// Form names the byte form.
	Form string
	// Where is the input, with the decoders that led to the part:
	// "out/flows.parquet!parquet:col3!zstd".
	Where string
	// Offset is the byte offset of the match in that (decoded) part.
	Offset int
}

// String formats the hit for a test failure.
func (h Hit) String() string {
	return fmt.Sprintf("%s: canary %s as %s at offset %d", h.Where, h.Addr, h.Form, h.Offset)
}

// Scanner searches inputs for a fixed set of canary addresses. A Scanner is
// not safe for concurrent use by several goroutines.
type Scanner struct {
	addrs    []netip.Addr
	forms    [][]Form
	decoders []Decoder
	maxDepth int
	scanned  int64
}

// NewScanner returns a Scanner for the canary addresses, with the gzip, zstd
// and lz4 decoders installed.
func NewScanner(addrs ...netip.Addr) *Scanner {
	s := &Scanner{maxDepth: 8}
	for _, a := range addrs {
		s.addrs = append(s.addrs, a.Unmap())
		s.forms = append(s.forms, Forms(a))
	}
	s.decoders = append(s.decoders, Gzip(), Zstd(), LZ4())
	return s
}

// AddDecoder installs d; decoders are tried in the order added, the first
// match wins.
func (s *Scanner) AddDecoder(d Decoder) { s.decoders = append(s.decoders, d) }

// Scanned returns how many bytes were searched (raw and decoded), to prove
// in a test that the scan saw the outputs at all.
func (s *Scanner) Scanned() int64 { return s.scanned }

// ExpectedRandomHits estimates how many hits of the binary forms n bytes of
// random data (pseudonyms, compressed data) give by chance: about n·k/2^32
// for k 4-byte forms. Tests with large outputs use fixed keys, so that a
// chance hit is reproducible rather than flaky.
func (s *Scanner) ExpectedRandomHits(n int64) float64 {
	var k float64
	for _, fs := range s.forms {
		for _, f := range fs {
			if !f.Text && len(f.Bytes) == 4 {
				k++
			}
		}
	}
	return float64(n) * k / (1 << 32)
}

// ScanBytes searches data (named name, for decoder matching and reports),
// decoding it recursively when a decoder matches.
func (s *Scanner) ScanBytes(name string, data []byte) ([]Hit, error) {
	return s.scan(name, filepath.Base(name), data, 0)
}

// ScanReader reads r to the end and scans it like ScanBytes.
func (s *Scanner) ScanReader(name string, r io.Reader) ([]Hit, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return s.ScanBytes(name, data)
}

// ScanFile scans one file.
func (s *Scanner) ScanFile(path string) ([]Hit, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return s.ScanBytes(path, data)
}

// ScanDir scans every regular file under dir.
func (s *Scanner) ScanDir(dir string) ([]Hit, error) {
	var hits []Hit
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		h, err := s.ScanFile(path)
		hits = append(hits, h...)
		return err
	})
	return hits, err
}

func (s *Scanner) scan(where, name string, data []byte, depth int) ([]Hit, error) {
	var dec *Decoder
	if depth < s.maxDepth {
		head := data[:min(len(data), 512)]
		for i := range s.decoders {
			if s.decoders[i].Match(name, head) {
				dec = &s.decoders[i]
				break
			}
		}
	}
	var hits []Hit
	if dec == nil || !dec.Opaque {
		hits = s.search(where, data)
	}
	if dec == nil {
		return hits, nil
	}
	n := 0
	err := dec.Decode(bytes.NewReader(data), func(part string, b []byte) error {
		n++
		w := where + "!" + dec.Name
		if part != "" {
			w += ":" + part
		}
		h, err := s.scan(w, part, b, depth+1)
		hits = append(hits, h...)
		return err
	})
	if err != nil {
		return hits, fmt.Errorf("decode %s as %s: %w", where, dec.Name, err)
	}
	return hits, nil
}

func (s *Scanner) search(where string, data []byte) []Hit {
	s.scanned += int64(len(data))
	var hits []Hit
	for i, fs := range s.forms {
		for _, f := range fs {
			for off := 0; ; {
				j := bytes.Index(data[off:], f.Bytes)
				if j < 0 {
					break
				}
				at := off + j
				off = at + 1
				if f.Text && !boundary(data, at, len(f.Bytes), f.class) {
					continue
				}
				hits = append(hits, Hit{Addr: s.addrs[i], Form: f.Name, Where: where, Offset: at})
			}
		}
	}
	sort.Slice(hits, func(i, j int) bool { return hits[i].Offset < hits[j].Offset })
	return hits
}

// boundary reports whether data[at:at+n] is a whole token of class: the
// bytes before and after it are not in the class.
func boundary(data []byte, at, n int, class func(byte) bool) bool {
	if at > 0 && class(data[at-1]) {
		return false
	}
	return at+n >= len(data) || !class(data[at+n])
}

// Gzip decodes gzip streams (by magic bytes).
func Gzip() Decoder {
	return Decoder{
		Name:   "gzip",
		Opaque: true,
		Match:  func(_ string, h []byte) bool { return bytes.HasPrefix(h, []byte{0x1f, 0x8b}) },
		Decode: func(r io.Reader, emit func(string, []byte) error) error {
			zr, err := gzip.NewReader(r)
			if err != nil {
				return err
			}
			b, err := io.ReadAll(zr)
			if err != nil {
				return err
			}
			return emit("", b)
		},
	}
}

// Zstd decodes zstd frames (by magic bytes).
func Zstd() Decoder {
	return Decoder{
		Name:   "zstd",
		Opaque: true,
		Match:  func(_ string, h []byte) bool { return bytes.HasPrefix(h, []byte{0x28, 0xb5, 0x2f, 0xfd}) },
		Decode: func(r io.Reader, emit func(string, []byte) error) error {
			zr, err := zstd.NewReader(r)
			if err != nil {
				return err
			}
			defer zr.Close()
			b, err := io.ReadAll(zr)
			if err != nil {
				return err
			}
			return emit("", b)
		},
	}
}

// LZ4 decodes lz4 frames (by magic bytes).
func LZ4() Decoder {
	return Decoder{
		Name:   "lz4",
		Opaque: true,
		Match:  func(_ string, h []byte) bool { return bytes.HasPrefix(h, []byte{0x04, 0x22, 0x4d, 0x18}) },
		Decode: func(r io.Reader, emit func(string, []byte) error) error {
			b, err := io.ReadAll(lz4.NewReader(r))
			if err != nil {
				return err
			}
			return emit("", b)
		},
	}
}

// Report formats hits for a test failure message, at most max of them.
func Report(hits []Hit, max int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d canary hit(s):", len(hits))
	for i, h := range hits {
		if i == max {
			fmt.Fprintf(&b, "\n  ... and %d more", len(hits)-max)
			break
		}
		b.WriteString("\n  ")
		b.WriteString(h.String())
	}
	return b.String()
}
