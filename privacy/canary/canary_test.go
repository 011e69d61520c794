package canary

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

func TestForms(t *testing.T) {
	names := func(fs []Form) map[string]string {
		m := map[string]string{}
		for _, f := range fs {
			m[f.Name] = string(f.Bytes)
		}
		return m
	}
	got := names(Forms(netip.MustParseAddr("192.0.2.7")))
	want := map[string]string{
		"ipv4-binary":            "\xc0\x00\x02\x07",
		"ipv4-binary-le":         "\x07\x02\x00\xc0",
		"ipv4-mapped-binary":     "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xc0\x00\x02\x07",
		"ipv4-dotted":            "192.0.2.7",
		"ipv4-mapped-text":       "::ffff:192.0.2.7",
		"ipv4-mapped-text-hex":   "::ffff:c000:207",
		"ipv4-mapped-text-upper": "::FFFF:C000:207",
		"ipv4-decimal":           "3221225991",
		"ipv4-hex":               "c0000207",
		"ipv4-hex-upper":         "C0000207",
		"ipv4-mapped-hex":        "00000000000000000000ffffc0000207",
		"ipv4-mapped-hex-upper":  "00000000000000000000FFFFC0000207",
		"ipv4-bytes-json":        "192,0,2,7",
		"ipv4-bytes-fmt":         "192 0 2 7",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IPv4 forms (-want +got):\n%s", diff)
	}
	// An IPv4-mapped address has the IPv4 forms.
	if diff := cmp.Diff(want, names(Forms(netip.MustParseAddr("::ffff:192.0.2.7")))); diff != "" {
		t.Errorf("IPv4-mapped forms (-want +got):\n%s", diff)
	}
	got = names(Forms(netip.MustParseAddr("2001:db8:1::a7")))
	want = map[string]string{
		"ipv6-binary":              "\x20\x01\x0d\xb8\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\xa7",
		"ipv6-text":                "2001:db8:1::a7",
		"ipv6-text-upper":          "2001:DB8:1::A7",
		"ipv6-text-expanded":       "2001:0db8:0001:0000:0000:0000:0000:00a7",
		"ipv6-text-expanded-upper": "2001:0DB8:0001:0000:0000:0000:0000:00A7",
		"ipv6-hex":                 "20010db80001000000000000000000a7",
		"ipv6-hex-upper":           "20010DB80001000000000000000000A7",
		"ipv6-bytes-json":          "32,1,13,184,0,1,0,0,0,0,0,0,0,0,0,167",
		"ipv6-bytes-fmt":           "32 1 13 184 0 1 0 0 0 0 0 0 0 0 0 167",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IPv6 forms (-want +got):\n%s", diff)
	}
}

func formsFound(hits []Hit) []string {
	var out []string
	for _, h := range hits {
		out = append(out, h.Form)
	}
	sort.Strings(out)
	return out
}

func TestScanBytesEveryForm(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.7")
	s := NewScanner(a)
	for _, f := range Forms(a) {
		data := append(append([]byte("prefix "), f.Bytes...), " suffix"...)
		hits, err := s.ScanBytes("x", data)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, h := range hits {
			found = found || h.Form == f.Name
		}
		if !found {
			t.Errorf("form %s not found in %q", f.Name, data)
		}
	}
}

func TestScanBoundaries(t *testing.T) {
	s := NewScanner(netip.MustParseAddr("192.0.2.7"))
	tests := []struct {
		in   string
		want []string
	}{
		{"192.0.2.70", nil},
		{"1192.0.2.7", nil},
		{"192.0.2.7:53", []string{"ipv4-dotted"}},
		{"192.0.2.7.53 (tcpdump)", []string{"ipv4-dotted"}},
		{"[::ffff:192.0.2.7]", []string{"ipv4-dotted", "ipv4-mapped-text"}},
		{"0xc0000207", []string{"ipv4-hex"}},
		{"c0000207ff", nil},
		{"13221225991", nil},
		{"n=3221225991,", []string{"ipv4-decimal"}},
	}
	for _, tt := range tests {
		hits, err := s.ScanBytes("x", []byte(tt.in))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, formsFound(hits)); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.in, diff)
		}
	}
}

func compressed(t *testing.T, kind string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch kind {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w = zw
	case "lz4":
		w = lz4.NewWriter(&buf)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestScanDecodesCompression(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:1::a7")
	payload := bytes.Repeat([]byte("flow to 2001:db8:1::a7 and filler text "), 50)
	dir := t.TempDir()
	for _, kind := range []string{"gzip", "zstd", "lz4"} {
		data := compressed(t, kind, payload)
		if n := bytes.Count(data, []byte("2001:db8:1::a7")); n > 1 {
			t.Fatalf("%s output holds the plain text %d times; the test proves nothing", kind, n)
		}
		if err := os.WriteFile(filepath.Join(dir, "out."+kind), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Nested: zstd inside gzip.
	if err := os.WriteFile(filepath.Join(dir, "nested.bin"), compressed(t, "gzip", compressed(t, "zstd", payload)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewScanner(a)
	hits, err := s.ScanDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]int{}
	for _, h := range hits {
		where[strings.TrimPrefix(h.Where, dir+"/")]++
	}
	want := map[string]int{"out.gzip!gzip": 50, "out.zstd!zstd": 50, "out.lz4!lz4": 50, "nested.bin!gzip!zstd": 50}
	if diff := cmp.Diff(want, where); diff != "" {
		t.Errorf("hits by input (-want +got):\n%s", diff)
	}
	if s.Scanned() < 4*int64(len(payload)) {
		t.Errorf("Scanned() = %d, want at least the decoded bytes", s.Scanned())
	}
}

// TestCustomDecoder shows how a format package plugs in: a toy
// length-prefixed message format whose values are decoded and scanned.
func TestCustomDecoder(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.7")
	a4 := a.As4()
	var msg bytes.Buffer
	msg.WriteString("TOY1")
	for _, v := range [][]byte{[]byte("hello"), compressed(t, "gzip", a4[:])} {
		_ = binary.Write(&msg, binary.BigEndian, uint16(len(v)))
		msg.Write(v)
	}
	toy := Decoder{
		Name:  "toy",
		Match: func(name string, head []byte) bool { return bytes.HasPrefix(head, []byte("TOY1")) },
		Decode: func(r io.Reader, emit func(string, []byte) error) error {
			if _, err := io.ReadFull(r, make([]byte, 4)); err != nil {
				return err
			}
			for i := 0; ; i++ {
				var n uint16
				if err := binary.Read(r, binary.BigEndian, &n); errors.Is(err, io.EOF) {
					return nil
				} else if err != nil {
					return err
				}
				v := make([]byte, n)
				if _, err := io.ReadFull(r, v); err != nil {
					return err
				}
				if err := emit("value"+string(rune('0'+i)), v); err != nil {
					return err
				}
			}
		},
	}
	s := NewScanner(a)
	if hits, _ := s.ScanBytes("batch", msg.Bytes()); len(hits) != 0 {
		t.Fatalf("without the decoder: %v", hits)
	}
	s.AddDecoder(toy)
	hits, err := s.ScanBytes("batch", msg.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 1 || hits[0].Where != "batch!toy:value1!gzip" || hits[0].Form != "ipv4-binary" {
		t.Errorf("hits = %v", hits)
	}
	// A decoder error is reported, not swallowed.
	if _, err := s.ScanBytes("bad", []byte("TOY1\x00\x09abc")); err == nil {
		t.Error("truncated input: no error")
	}
}

func TestExpectedRandomHits(t *testing.T) {
	s := NewScanner(netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::1"))
	// Two 4-byte forms (network and little-endian order) of one IPv4 canary.
	if got := s.ExpectedRandomHits(1 << 32); got != 2 {
		t.Errorf("ExpectedRandomHits(2^32) = %v, want 2", got)
	}
}

func TestReport(t *testing.T) {
	hits := []Hit{{Addr: netip.MustParseAddr("192.0.2.7"), Form: "ipv4-dotted", Where: "f", Offset: 3}, {}, {}}
	got := Report(hits, 1)
	if !strings.Contains(got, "3 canary hit(s)") || !strings.Contains(got, "f: canary 192.0.2.7 as ipv4-dotted at offset 3") || !strings.Contains(got, "and 2 more") {
		t.Errorf("Report = %q", got)
	}
}
