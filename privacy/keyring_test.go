package privacy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/flow"
)

func newRing(t *testing.T, mode string) *Keyring {
	t.Helper()
	k, err := CreateKeyring(filepath.Join(t.TempDir(), "keys"), KeyringParams{EpochLength: 7 * 24 * time.Hour, Pseudonym: mode})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLoosePermissionsRefused(t *testing.T) {
	tests := []struct {
		name  string
		path  func(dir string, e uint32) string
		mode  os.FileMode
		fixed string
	}{
		{"key file readable by group", keyFile, 0o640, "chmod 600"},
		{"key file readable by others", keyFile, 0o604, "chmod 600"},
		{"keyring.json readable by others", func(d string, _ uint32) string { return filepath.Join(d, "keyring.json") }, 0o644, "chmod 600"},
		{"key directory listable by group", func(d string, _ uint32) string { return d }, 0o750, "chmod 700"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			ring, err := CreateKeyring(dir, KeyringParams{EpochLength: 7 * 24 * time.Hour, Pseudonym: ModeAES128})
			if err != nil {
				t.Fatal(err)
			}
			e, _ := ring.EpochAt(testNow)
			if _, err := ring.CreateKey(e, nil); err != nil {
				t.Fatal(err)
			}
			path := tt.path(dir, e)
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			for _, cfg := range []func(*Config){nil, func(c *Config) { c.CreateKeys = false }} {
				c := testConfig(dir)
				if cfg != nil {
					cfg(&c)
				}
				_, err = New(c, Deps{Now: func() time.Time { return testNow }})
				if !errors.Is(err, ErrLoosePermissions) {
					t.Fatalf("New with %s mode %o: %v, want ErrLoosePermissions", path, tt.mode, err)
				}
				if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.fixed) {
					t.Errorf("error does not name the file and the fix: %v", err)
				}
			}
			ring2, err := OpenKeyring(dir)
			if err == nil {
				_, err = ring2.Reveal(e, flow.Pseudonym{})
			}
			if !errors.Is(err, ErrLoosePermissions) {
				t.Errorf("reveal with loose permissions: %v, want ErrLoosePermissions", err)
			}
		})
	}
}

func keyFile(dir string, e uint32) string {
	return filepath.Join(dir, fmt.Sprintf("epoch-%010d.key", e))
}

func TestCreateKeyringMismatch(t *testing.T) {
	ring := newRing(t, ModeAES128)
	_, err := CreateKeyring(ring.Dir(), KeyringParams{EpochLength: 24 * time.Hour, Pseudonym: ModeAES128})
	if !errors.Is(err, ErrKeyringMismatch) || !strings.Contains(err.Error(), "epoch length 168h0m0s, not 24h0m0s") {
		t.Errorf("other epoch length: %v", err)
	}
	_, err = CreateKeyring(ring.Dir(), KeyringParams{EpochLength: 7 * 24 * time.Hour, Pseudonym: ModeCryptoPAn})
	if !errors.Is(err, ErrKeyringMismatch) {
		t.Errorf("other mode: %v", err)
	}
	if _, err := CreateKeyring(ring.Dir(), KeyringParams{EpochLength: 7 * 24 * time.Hour, Pseudonym: ModeAES128}); err != nil {
		t.Errorf("same parameters: %v", err)
	}
	cfg := testConfig(ring.Dir())
	cfg.EpochLength = 24 * time.Hour
	cfg.CreateKeys = false
	if _, err := New(cfg, Deps{}); !errors.Is(err, ErrKeyringMismatch) {
		t.Errorf("New with another epoch length: %v", err)
	}
}

func TestOpenKeyringErrors(t *testing.T) {
	if _, err := OpenKeyring(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, ErrNoKeyring) || !strings.Contains(err.Error(), "ccflow keygen") {
		t.Errorf("missing directory: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeyring(empty); !errors.Is(err, ErrNoKeyring) {
		t.Errorf("directory without keyring.json: %v", err)
	}
	cfg := testConfig(empty)
	cfg.CreateKeys = false
	if _, err := New(cfg, Deps{}); !errors.Is(err, ErrNoKeyring) {
		t.Errorf("New without keys and create_keys off: %v", err)
	}
}

// TestRevealRoundTripAndErrors reveals with the right key, another key
// directory's key and the wrong epoch's key. A wrong key is caught only by
// CheckRevealed, which passes by chance with probability = the share of the
// address space the prefixes cover (TestWrongKeyAcceptRate). The prefixes
// here (a v4 /24 and a v6 /48) make that 2^-24 per try, and the keys are
// seeded, so the test is reproducible.
func TestRevealRoundTripAndErrors(t *testing.T) {
	cfg := testConfig("")
	cfg.Subscribers = []string{"192.0.2.0/24", "2001:db8:1::/48"}
	subs, err := LoadSubscribers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{ModeAES128, ModeAES256, ModeCryptoPAn} {
		t.Run(mode, func(t *testing.T) {
			ring := newRing(t, mode)
			other := newRing(t, mode)
			e, _ := ring.EpochAt(testNow)
			for i, k := range []*Keyring{ring, other} {
				if _, err := k.CreateKey(e, seededRand(byte(10*i+1))); err != nil {
					t.Fatal(err)
				}
				if _, err := k.CreateKey(e+1, seededRand(byte(10*i+2))); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range []string{"192.0.2.7", "2001:db8:1::7"} {
				a := netip.MustParseAddr(s)
				c, err := ring.loadKey(e)
				if err != nil {
					t.Fatal(err)
				}
				p := pseudonymOf(c, a)
				got, err := ring.Reveal(e, p)
				if err != nil || got != a {
					t.Fatalf("Reveal = %v, %v; want %v", got, err, a)
				}
				if err := ring.CheckRevealed(got, subs); err != nil {
					t.Errorf("CheckRevealed(right answer): %v", err)
				}
				// Wrong key (another key directory) and wrong epoch.
				for name, try := range map[string]func() (netip.Addr, error){
					"other key directory": func() (netip.Addr, error) { return other.Reveal(e, p) },
					"wrong epoch":         func() (netip.Addr, error) { return ring.Reveal(e+1, p) },
				} {
					got, err := try()
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if err := ring.CheckRevealed(got, subs); !errors.Is(err, ErrWrongKey) {
						t.Errorf("%s: CheckRevealed(%v) = %v, want ErrWrongKey", name, got, err)
					}
				}
			}
			// Missing key.
			if _, err := ring.Reveal(e+7, flow.Pseudonym{1}); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), fmt.Sprintf("epoch %d", e+7)) {
				t.Errorf("missing key: %v", err)
			}
		})
	}
}

func TestCheckRevealedWithoutSubscribers(t *testing.T) {
	ring := newRing(t, ModeAES128)
	if err := ring.CheckRevealed(netip.MustParseAddr("192.0.2.7"), nil); err != nil {
		t.Errorf("IPv4 result: %v", err)
	}
	if err := ring.CheckRevealed(netip.MustParseAddr("2001:db8:1::7"), nil); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "--subscribers") {
		t.Errorf("IPv6 result without prefixes: %v", err)
	}
}

func TestDestroy(t *testing.T) {
	ring := newRing(t, ModeAES128)
	cur, _ := ring.EpochAt(testNow)
	for e := cur - 3; e <= cur+1; e++ {
		if _, err := ring.CreateKey(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Refuses to destroy the current epoch.
	if _, err := ring.Destroy(ring.EpochStart(cur+1), testNow); err == nil || !strings.Contains(err.Error(), "current epoch") {
		t.Errorf("destroying the current epoch: %v", err)
	}
	// Destroys the epochs that end at or before the date: a date inside
	// epoch cur-1 destroys cur-3 and cur-2.
	gone, err := ring.Destroy(ring.EpochStart(cur-1).Add(time.Hour), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{cur - 3, cur - 2}, gone); diff != "" {
		t.Errorf("destroyed (-want +got):\n%s", diff)
	}
	left, _ := ring.Epochs()
	if diff := cmp.Diff([]uint32{cur - 1, cur, cur + 1}, left); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
	// The mark survives reopening and blocks re-creation.
	again, err := OpenKeyring(ring.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if again.DestroyedBefore() != cur-1 {
		t.Errorf("DestroyedBefore = %d, want %d", again.DestroyedBefore(), cur-1)
	}
	if _, err := again.CreateKey(cur-2, nil); !errors.Is(err, ErrEpochDestroyed) {
		t.Errorf("CreateKey of a destroyed epoch: %v", err)
	}
	if _, err := again.Reveal(cur-2, flow.Pseudonym{1}); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "destroyed") {
		t.Errorf("Reveal of a destroyed epoch: %v", err)
	}
	// A stage drops the destroyed epochs' flows instead of making keys.
	cfg := testConfig(ring.Dir())
	s, err := New(cfg, Deps{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	r := rec("192.0.2.7", 80, "198.51.100.9", 443)
	r.TimeStartMs = ring.EpochStart(cur - 2).UnixMilli()
	if out := s.Pseudonymize([]flow.Record{r}, nil); len(out) != 0 {
		t.Errorf("flow of a destroyed epoch pseudonymized: %+v", out)
	}
	if _, err := os.Stat(ring.keyPath(cur - 2)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stage re-created a destroyed key: %v", err)
	}
	// Destroying again is a no-op.
	if gone, err := ring.Destroy(ring.EpochStart(cur-1), testNow); err != nil || len(gone) != 0 {
		t.Errorf("second Destroy = %v, %v", gone, err)
	}
}

func TestCreateKeyRace(t *testing.T) {
	ring := newRing(t, ModeAES128)
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := OpenKeyring(ring.Dir()) // as separate processes would
			if err != nil {
				t.Error(err)
				return
			}
			c, err := k.CreateKey(5, nil)
			if err != nil {
				t.Error(err)
			}
			if c {
				mu.Lock()
				created++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("%d goroutines created the key, want exactly 1", created)
	}
	ents, _ := os.ReadDir(ring.Dir())
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	fi, err := os.Stat(ring.keyPath(5))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v mode %v", err, fi.Mode())
	}
}

func TestEpochMath(t *testing.T) {
	ring := newRing(t, ModeAES128)
	e, err := ring.EpochAt(testNow)
	if err != nil {
		t.Fatal(err)
	}
	start := ring.EpochStart(e)
	if start.After(testNow) || !ring.EpochStart(e+1).After(testNow) || start.Weekday() != time.Monday {
		t.Errorf("epoch %d starts %v (a %v); now %v", e, start, start.Weekday(), testNow)
	}
	if _, err := ring.EpochAt(DefaultOrigin.Add(-time.Millisecond)); !errors.Is(err, ErrBeforeOrigin) {
		t.Errorf("before origin: %v", err)
	}
}

// TestWrongKeyAcceptRate measures how often CheckRevealed accepts a token
// revealed with a wrong key (docs/privacy.md gives these rates). A wrong AES
// key turns an IPv4 token into a random 128-bit value, IPv4-mapped with
// probability 2^-96: never accepted. Crypto-PAn keeps IPv4 tokens IPv4 and
// its pad makes neighbouring result bits agree more often than not (the
// input of bit i equals that of bit i-1 when address bit i-1 equals the pad
// bit), so a wrong key lands in a prefix several times more often than the
// prefix's share of the space: for 10.0.0.0/8 (share 1/256 = 0.4%) about
// 2% on average, up to 8% for some tokens; for a /24 it stays negligible.
// The keys are seeded, so the counts are reproducible.
func TestWrongKeyAcceptRate(t *testing.T) {
	const keys = 4096
	for _, tc := range []struct {
		mode, prefix string
		min, max     int
	}{
		{ModeAES128, "10.0.0.0/8", 0, 0},
		{ModeCryptoPAn, "10.0.0.0/8", 17, 410}, // above the share (16), below 10%
		{ModeCryptoPAn, "192.0.2.0/24", 0, 4},  // share 2^-24: about 0.0002 of 4096
	} {
		t.Run(tc.mode+"/"+tc.prefix, func(t *testing.T) {
			cfg := testConfig("")
			cfg.Subscribers = []string{tc.prefix}
			subs, err := LoadSubscribers(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ring := &Keyring{params: KeyringParams{Pseudonym: tc.mode}}
			n, _ := keyLen(tc.mode)
			rng := seededRand(42)
			newCipher := func() *epochCipher {
				key := make([]byte, n)
				_, _ = rng.Read(key)
				c, err := newEpochCipher(1, tc.mode, key)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			subscriber := netip.MustParsePrefix(tc.prefix).Addr().Next()
			token := pseudonymOf(newCipher(), subscriber)
			accepted := 0
			for range keys {
				got := netip.AddrFrom16(newCipher().reveal(token)).Unmap()
				if ring.CheckRevealed(got, subs) == nil {
					accepted++
				}
			}
			t.Logf("%d of %d wrong keys accepted", accepted, keys)
			if accepted < tc.min || accepted > tc.max {
				t.Errorf("%d of %d wrong keys accepted, want %d..%d", accepted, keys, tc.min, tc.max)
			}
		})
	}
}
