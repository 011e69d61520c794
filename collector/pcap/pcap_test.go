package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUDPRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, LinkRaw)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1_700_000_000, 123_000)
	want := []Datagram{
		{Time: ts, Src: netip.MustParseAddrPort("192.0.2.1:40000"), Dst: netip.MustParseAddrPort("198.51.100.1:2055"), Payload: []byte("v4")},
		{Time: ts, Src: netip.MustParseAddrPort("[2001:db8::1]:40000"), Dst: netip.MustParseAddrPort("[2001:db8::2]:4739"), Payload: []byte("v6 payload")},
		{Time: ts, Src: netip.MustParseAddrPort("203.0.113.1:1"), Dst: netip.MustParseAddrPort("203.0.113.2:6343"), Payload: nil},
	}
	for _, d := range want {
		if err := w.WriteUDP(d.Time, d.Src, d.Dst, d.Payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDatagrams(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, want, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("datagrams (-got +want):\n%s", diff)
	}
}

func TestEthernetAndErrors(t *testing.T) {
	// An Ethernet capture with one VLAN-tagged UDP packet, big-endian.
	var raw bytes.Buffer
	w, _ := NewWriter(&raw, LinkRaw)
	_ = w.WriteUDP(time.Unix(1, 0), netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2"), []byte("x"))
	_ = w.Flush()
	ip := raw.Bytes()[24+16:]
	frame := append([]byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x81, 0, 0, 5, 0x08, 0}, ip...)
	var eth bytes.Buffer
	h := make([]byte, 24)
	binary.BigEndian.PutUint32(h, magicMicro)
	binary.BigEndian.PutUint32(h[16:], maxSnap)
	binary.BigEndian.PutUint32(h[20:], LinkEthernet)
	eth.Write(h)
	rec := make([]byte, 16)
	binary.BigEndian.PutUint32(rec[8:], uint32(len(frame)))
	binary.BigEndian.PutUint32(rec[12:], uint32(len(frame)))
	eth.Write(rec)
	eth.Write(frame)
	ds, err := ReadDatagrams(bytes.NewReader(eth.Bytes()))
	if err != nil || len(ds) != 1 || string(ds[0].Payload) != "x" || ds[0].Dst.Port() != 2 {
		t.Fatalf("ReadDatagrams = %+v, %v", ds, err)
	}
	if _, err := NewReader(bytes.NewReader(make([]byte, 24))); !errors.Is(err, ErrFormat) {
		t.Errorf("bad magic: %v", err)
	}
	if _, err := ReadDatagrams(bytes.NewReader(eth.Bytes()[:len(eth.Bytes())-3])); !errors.Is(err, ErrFormat) {
		t.Errorf("truncated record: %v", err)
	}
}
