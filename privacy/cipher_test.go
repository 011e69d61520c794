package privacy

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/ccflow/ccflow/flow"
)

func mustCipher(t testing.TB, mode string, seed byte) *epochCipher {
	t.Helper()
	n, err := keyLen(mode)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, n)
	_, _ = seededRand(seed).Read(key)
	c, err := newEpochCipher(1, mode, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pseudonymOf(c *epochCipher, a netip.Addr) flow.Pseudonym {
	var p flow.Pseudonym
	src := a.As16()
	c.pseudonymize(&p, &src)
	return p
}

func TestPseudonymProperties(t *testing.T) {
	addrs := []netip.Addr{
		netip.MustParseAddr("192.0.2.7"),
		netip.MustParseAddr("192.0.2.8"),
		netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("2001:db8:1::7"),
		netip.MustParseAddr("2001:db8:1::8"),
	}
	for _, mode := range []string{ModeAES128, ModeAES256, ModeCryptoPAn} {
		t.Run(mode, func(t *testing.T) {
			c1, c1again, c2 := mustCipher(t, mode, 1), mustCipher(t, mode, 1), mustCipher(t, mode, 2)
			seen := map[flow.Pseudonym]netip.Addr{}
			for _, a := range addrs {
				p := pseudonymOf(c1, a)
				if p != pseudonymOf(c1again, a) {
					t.Errorf("%v: not deterministic under the same key", a)
				}
				if p == pseudonymOf(c2, a) {
					t.Errorf("%v: the same pseudonym under two epoch keys", a)
				}
				if p == flow.Pseudonym(a.As16()) {
					t.Errorf("%v: pseudonym equals the address", a)
				}
				if b, dup := seen[p]; dup {
					t.Errorf("%v and %v collide", a, b)
				}
				seen[p] = a
				if got := netip.AddrFrom16(c1.reveal(p)).Unmap(); got != a {
					t.Errorf("reveal(pseudonym(%v)) = %v", a, got)
				}
			}
		})
	}
}

// TestCryptoPAnReference checks the IPv4 mode against the sample output of
// the Crypto-PAn reference implementation (sample_trace_raw.txt with the
// key of sample.cpp).
func TestCryptoPAnReference(t *testing.T) {
	key := []byte{21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16,
		216, 152, 143, 131, 121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2}
	c, err := newEpochCipher(0, ModeCryptoPAn, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range [][2]string{
		{"128.11.68.132", "135.242.180.132"},
		{"129.118.74.4", "134.136.186.123"},
		{"130.132.252.244", "133.68.164.234"},
		{"141.223.7.43", "141.167.8.160"},
		{"141.233.145.108", "141.129.237.235"},
		{"152.163.225.39", "151.140.114.167"},
		{"156.29.3.236", "147.225.12.42"},
		{"165.247.96.84", "162.9.99.234"},
		{"166.107.77.190", "160.132.178.185"},
		{"192.102.249.13", "252.138.62.131"},
		{"192.215.32.125", "252.43.47.189"},
		{"192.233.80.103", "252.25.108.8"},
		{"192.41.57.43", "252.222.221.184"},
		{"193.150.244.223", "253.169.52.216"},
		{"195.205.63.100", "255.186.223.5"},
		{"198.200.171.101", "249.199.68.213"},
		{"198.26.132.101", "249.36.123.202"},
		{"198.36.213.5", "249.7.21.132"},
		{"198.51.77.238", "249.18.186.254"},
		{"199.217.79.101", "248.38.184.213"},
		{"202.49.198.20", "245.206.7.234"},
		{"24.0.250.221", "100.15.198.226"},
		{"4.3.88.225", "124.60.155.63"},
		{"63.14.55.111", "95.9.215.7"},
		{"64.14.118.196", "0.255.183.58"},
	} {
		in, want := netip.MustParseAddr(v[0]), netip.MustParseAddr(v[1])
		p := pseudonymOf(c, in)
		if got := netip.AddrFrom16(p).Unmap(); got != want {
			t.Errorf("Crypto-PAn(%v) = %v, want %v", in, got, want)
		}
		if got := netip.AddrFrom16(c.reveal(p)).Unmap(); got != in {
			t.Errorf("reveal(Crypto-PAn(%v)) = %v", in, got)
		}
	}
}

func TestCryptoPAnPreservesPrefixes(t *testing.T) {
	c := mustCipher(t, ModeCryptoPAn, 3)
	common := func(a, b [16]byte) int {
		n := 0
		for i := 0; i < 128 && (a[i/8]>>(7-i%8))&1 == (b[i/8]>>(7-i%8))&1; i++ {
			n++
		}
		return n
	}
	pairs := [][2]string{
		{"192.0.2.7", "192.0.2.200"},
		{"192.0.2.7", "192.0.3.7"},
		{"10.0.0.1", "11.0.0.1"},
		{"2001:db8:1::7", "2001:db8:1:ffff::7"},
		{"2001:db8:1::7", "2001:db8:2::7"},
	}
	for _, pr := range pairs {
		a, b := netip.MustParseAddr(pr[0]), netip.MustParseAddr(pr[1])
		pa, pb := pseudonymOf(c, a), pseudonymOf(c, b)
		if got, want := common(pa, pb), common(a.As16(), b.As16()); got != want {
			t.Errorf("%v, %v share %d bits; pseudonyms share %d", a, b, want, got)
		}
	}
}

// TestNoCollisions pseudonymizes 10M distinct addresses (sequential IPv4 in
// 10.0.0.0/8, the most structured input) and checks that no two pseudonyms
// are equal: a sort of the first 8 bytes, with any equal prefixes compared in
// full (80 MB rather than the 0.5 GB of a map). With -short, 1M addresses.
func TestNoCollisions(t *testing.T) {
	n := 10_000_000
	if testing.Short() {
		n = 1_000_000
	}
	c := mustCipher(t, ModeAES128, 4)
	heads := make([]uint64, n)
	var p flow.Pseudonym
	src := new([16]byte)
	pseudonym := func(i int) flow.Pseudonym {
		*src = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).As16()
		c.pseudonymize(&p, src)
		return p
	}
	for i := range heads {
		q := pseudonym(i)
		heads[i] = binary.BigEndian.Uint64(q[:8])
	}
	slices.Sort(heads)
	for i := 1; i < n; i++ {
		if heads[i] == heads[i-1] {
			// A 64-bit prefix collision is expected about once in 10^12
			// runs; it is only a full collision if all 16 bytes match.
			t.Logf("64-bit prefix collision %016x; checking in full", heads[i])
			var full []flow.Pseudonym
			for j := 0; j < n; j++ {
				if q := pseudonym(j); binary.BigEndian.Uint64(q[:8]) == heads[i] {
					full = append(full, q)
				}
			}
			if len(full) > 1 && full[0] == full[1] {
				t.Fatalf("collision: %v", full[0])
			}
		}
	}
}
