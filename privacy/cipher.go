package privacy

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"

	"github.com/ccflow/ccflow/flow"
)

// keyLen returns the length of the key material of a pseudonym mode.
func keyLen(mode string) (int, error) {
	switch mode {
	case ModeAES128:
		return 16, nil
	case ModeAES256:
		return 32, nil
	case ModeCryptoPAn:
		return 32, nil // AES-128 key + 16-byte pad secret
	}
	return 0, fmt.Errorf("unknown pseudonym mode %q (want %s, %s or %s)", mode, ModeAES128, ModeAES256, ModeCryptoPAn)
}

// epochCipher is the keyed permutation of one epoch. It is immutable after
// construction and safe for concurrent use.
type epochCipher struct {
	epoch uint32
	block cipher.Block
	pan   *cryptoPAn // nil in the AES modes
}

func newEpochCipher(epoch uint32, mode string, key []byte) (*epochCipher, error) {
	n, err := keyLen(mode)
	if err != nil {
		return nil, err
	}
	if len(key) != n {
		return nil, fmt.Errorf("%s key must be %d bytes, got %d", mode, n, len(key))
	}
	c := &epochCipher{epoch: epoch}
	if mode == ModeCryptoPAn {
		c.pan, err = newCryptoPAn(key)
		if err != nil {
			return nil, err
		}
		c.block = c.pan.block
		return c, nil
	}
	c.block, err = aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes key: %w", err)
	}
	return c, nil
}

// pseudonymize writes the pseudonym of the 16-byte address src to dst. Both
// must point to memory that is already on the heap (a record and an output
// slot): they are passed through an interface call and would otherwise be
// moved to the heap.
func (c *epochCipher) pseudonymize(dst *flow.Pseudonym, src *[16]byte) {
	if c.pan != nil {
		c.pan.anonymize(dst, src)
		return
	}
	c.block.Encrypt(dst[:], src[:])
}

// reveal inverts pseudonymize.
func (c *epochCipher) reveal(p flow.Pseudonym) [16]byte {
	var out [16]byte
	if c.pan != nil {
		c.pan.deanonymize(&out, &p)
		return out
	}
	c.block.Decrypt(out[:], p[:])
	return out
}

// cryptoPAn is the prefix-preserving Crypto-PAn scheme (J. Xu, J. Fan,
// M. Ammar, S. Moon, 2002) with AES-128, compatible with the reference
// implementation for IPv4 and extended bit by bit to 128-bit IPv6 addresses.
// IPv4-mapped addresses are anonymized on their 32 IPv4 bits and stay
// IPv4-mapped. It costs one AES block per address bit (32 for IPv4, 128 for
// IPv6).
type cryptoPAn struct {
	block cipher.Block
	padHi uint64
	padLo uint64
}

func newCryptoPAn(key []byte) (*cryptoPAn, error) {
	b, err := aes.NewCipher(key[:16])
	if err != nil {
		return nil, fmt.Errorf("aes key: %w", err)
	}
	c := &cryptoPAn{block: b}
	var pad [16]byte
	b.Encrypt(pad[:], key[16:32])
	c.padHi = binary.BigEndian.Uint64(pad[:8])
	c.padLo = binary.BigEndian.Uint64(pad[8:])
	return c, nil
}

// bit returns the one-time-pad bit for position pos given the first pos
// bits of the original address (hi, lo, most significant bit first). buf is
// scratch space on the heap (see epochCipher.pseudonymize).
func (c *cryptoPAn) bit(hi, lo uint64, pos int, buf *[16]byte) uint64 {
	var mhi, mlo uint64
	switch {
	case pos <= 64:
		mhi = ^uint64(0) << (64 - pos) // pos 0: shift by 64 gives 0
	default:
		mhi = ^uint64(0)
		mlo = ^uint64(0) << (128 - pos)
	}
	binary.BigEndian.PutUint64(buf[:8], hi&mhi|c.padHi&^mhi)
	binary.BigEndian.PutUint64(buf[8:], lo&mlo|c.padLo&^mlo)
	c.block.Encrypt(buf[:], buf[:])
	return uint64(buf[0] >> 7)
}

func bitsOf(a *[16]byte) (hi, lo uint64, n int, v4 bool) {
	if binary.BigEndian.Uint64(a[:8]) == 0 && binary.BigEndian.Uint32(a[8:12]) == 0xffff {
		return uint64(binary.BigEndian.Uint32(a[12:])) << 32, 0, 32, true
	}
	return binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:]), 128, false
}

func putBits(dst *[16]byte, hi, lo uint64, v4 bool) {
	if v4 {
		*dst = [16]byte{10: 0xff, 11: 0xff}
		binary.BigEndian.PutUint32(dst[12:], uint32(hi>>32))
		return
	}
	binary.BigEndian.PutUint64(dst[:8], hi)
	binary.BigEndian.PutUint64(dst[8:], lo)
}

func setBit(hi, lo *uint64, pos int, b uint64) {
	if pos < 64 {
		*hi |= b << (63 - pos)
	} else {
		*lo |= b << (127 - pos)
	}
}

func getBit(hi, lo uint64, pos int) uint64 {
	if pos < 64 {
		return hi >> (63 - pos) & 1
	}
	return lo >> (127 - pos) & 1
}

func (c *cryptoPAn) anonymize(dst *flow.Pseudonym, src *[16]byte) {
	hi, lo, n, v4 := bitsOf(src)
	var fhi, flo uint64
	buf := (*[16]byte)(dst) // scratch until the result is written
	for pos := 0; pos < n; pos++ {
		setBit(&fhi, &flo, pos, c.bit(hi, lo, pos, buf))
	}
	putBits((*[16]byte)(dst), hi^fhi, lo^flo, v4)
}

func (c *cryptoPAn) deanonymize(dst *[16]byte, p *flow.Pseudonym) {
	ahi, alo, n, v4 := bitsOf((*[16]byte)(p))
	var hi, lo uint64
	for pos := 0; pos < n; pos++ {
		setBit(&hi, &lo, pos, getBit(ahi, alo, pos)^c.bit(hi, lo, pos, dst))
	}
	putBits(dst, hi, lo, v4)
}
