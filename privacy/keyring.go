package privacy

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ccflow/ccflow/flow"
)

// Key directory layout (docs/privacy.md describes it for operators):
//
//	DIR/                      mode 0700
//	DIR/keyring.json          0600  origin, epoch length, pseudonym mode, destroyed_before
//	DIR/epoch-0000002817.key  0600  one independent random key per epoch
//	DIR/audit.log             0600  reveal audit log (default location)
//
// Epoch e covers [origin + e*length, origin + (e+1)*length). Keys of
// different epochs are independent random keys (not derived from a master
// key), so deleting an epoch's key file really makes that epoch's
// pseudonyms irreversible and unlinkable.
const (
	keyringFile    = "keyring.json"
	keyringFormat  = "ccflow-keyring/1"
	keyFileFormat  = "ccflow-epoch-key/1"
	keyFilePrefix  = "epoch-"
	keyFileSuffix  = ".key"
	auditFileName  = "audit.log"
	privateDirMode = 0o700
	privateMode    = 0o600
)

// DefaultOrigin is the origin of the epochs of a new key directory: Monday
// 1970-01-05 00:00 UTC, so that 7-day epochs run Monday to Monday (UTC).
var DefaultOrigin = time.Date(1970, 1, 5, 0, 0, 0, 0, time.UTC)

// KeyringParams are the fixed parameters of a key directory, chosen when it
// is created.
type KeyringParams struct {
	// Origin is the start of epoch 0.
	Origin time.Time
	// EpochLength is the length of every epoch (a whole number of seconds).
	EpochLength time.Duration
	// Pseudonym is the pseudonym mode (ModeAES128, ModeAES256 or
	// ModeCryptoPAn).
	Pseudonym string
}

type keyringJSON struct {
	Format          string `json:"format"`
	Origin          string `json:"origin"`
	EpochLength     string `json:"epoch_length"`
	Pseudonym       string `json:"pseudonym"`
	DestroyedBefore uint32 `json:"destroyed_before"`
}

type keyFileJSON struct {
	Format    string `json:"format"`
	Epoch     uint32 `json:"epoch"`
	Pseudonym string `json:"pseudonym"`
	Key       string `json:"key"`
	Created   string `json:"created"`
}

// Keyring is a key directory: its parameters and its per-epoch key files.
// A Keyring value is a snapshot of keyring.json (see Refresh); the key files
// are read when asked for. Methods are safe for concurrent use by several
// goroutines and processes: key files are created with an atomic
// link-if-absent, keyring.json is replaced atomically.
type Keyring struct {
	dir             string
	params          KeyringParams
	originMs        int64
	lengthMs        int64
	destroyedBefore uint32
}

// DefaultKeysDir returns the key directory used when none is configured:
// $STATE_DIRECTORY/keys under systemd (StateDirectory=ccflow), else
// $XDG_STATE_HOME/ccflow/keys, else ~/.local/state/ccflow/keys.
func DefaultKeysDir() (string, error) {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		d, _, _ = strings.Cut(d, ":")
		return filepath.Join(d, "keys"), nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ccflow", "keys"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find default key directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "ccflow", "keys"), nil
}

// checkPrivate refuses a key file or key directory that group or others can
// access in any way.
func checkPrivate(path string, fi fs.FileInfo) error {
	perm := fi.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	want := "600"
	if fi.IsDir() {
		want = "700"
	}
	return fmt.Errorf("%w: %s has mode %04o; fix it with: chmod %s %s", ErrLoosePermissions, path, perm, want, path)
}

// CreateKeyring creates a key directory with parameters p (the directory
// itself, mode 0700, and its keyring.json) and returns it. An existing key
// directory with the same parameters is opened instead; with different
// parameters it is ErrKeyringMismatch.
func CreateKeyring(dir string, p KeyringParams) (*Keyring, error) {
	if _, err := keyLen(p.Pseudonym); err != nil {
		return nil, err
	}
	if p.EpochLength < MinEpochLength || p.EpochLength > MaxEpochLength || p.EpochLength%time.Second != 0 {
		return nil, fmt.Errorf("epoch length %v must be whole seconds within %v..%v", p.EpochLength, MinEpochLength, MaxEpochLength)
	}
	if p.Origin.IsZero() {
		p.Origin = DefaultOrigin
	}
	p.Origin = p.Origin.UTC().Truncate(time.Second)
	if err := os.MkdirAll(dir, privateDirMode); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	k, err := OpenKeyring(dir)
	if err == nil {
		return k, k.checkParams(p)
	}
	if !errors.Is(err, ErrNoKeyring) {
		return nil, err
	}
	data, _ := json.MarshalIndent(keyringJSON{
		Format:      keyringFormat,
		Origin:      p.Origin.Format(time.RFC3339),
		EpochLength: p.EpochLength.String(),
		Pseudonym:   p.Pseudonym,
	}, "", "  ")
	created, err := writeExclusive(dir, keyringFile, append(data, '\n'))
	if err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	k, err = OpenKeyring(dir)
	if err != nil {
		return nil, err
	}
	if !created {
		return k, k.checkParams(p) // another process created it first
	}
	return k, nil
}

func (k *Keyring) checkParams(p KeyringParams) error {
	var diffs []string
	if p.EpochLength != k.params.EpochLength {
		diffs = append(diffs, fmt.Sprintf("epoch length %v, not %v", k.params.EpochLength, p.EpochLength))
	}
	if p.Pseudonym != k.params.Pseudonym {
		diffs = append(diffs, fmt.Sprintf("pseudonym mode %s, not %s", k.params.Pseudonym, p.Pseudonym))
	}
	if !p.Origin.IsZero() && !p.Origin.Equal(k.params.Origin) {
		diffs = append(diffs, fmt.Sprintf("origin %s, not %s", k.params.Origin.Format(time.RFC3339), p.Origin.Format(time.RFC3339)))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: %s has %s (configure privacy.epoch_length and privacy.pseudonym to match, or use another directory)", ErrKeyringMismatch, k.dir, strings.Join(diffs, ", "))
	}
	return nil
}

// OpenKeyring opens an existing key directory, refusing it (and its
// keyring.json) when group or others can access them (ErrLoosePermissions).
// A directory without keyring.json is ErrNoKeyring.
func OpenKeyring(dir string) (*Keyring, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (create it with: ccflow keygen --dir %s)", ErrNoKeyring, dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open key directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrNoKeyring, dir)
	}
	if err := checkPrivate(dir, fi); err != nil {
		return nil, err
	}
	k := &Keyring{dir: dir}
	if err := k.Refresh(); err != nil {
		return nil, err
	}
	return k, nil
}

// Refresh re-reads keyring.json (for destroyed_before, which `ccflow keys
// destroy` advances).
func (k *Keyring) Refresh() error {
	path := filepath.Join(k.dir, keyringFile)
	data, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s has no %s (create keys with: ccflow keygen --dir %s)", ErrNoKeyring, k.dir, keyringFile, k.dir)
	}
	if err != nil {
		return err
	}
	var j keyringJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNoKeyring, path, err)
	}
	if j.Format != keyringFormat {
		return fmt.Errorf("%w: %s: format %q, want %q", ErrNoKeyring, path, j.Format, keyringFormat)
	}
	origin, err := time.Parse(time.RFC3339, j.Origin)
	if err != nil {
		return fmt.Errorf("%w: %s: origin: %v", ErrNoKeyring, path, err)
	}
	length, err := time.ParseDuration(j.EpochLength)
	if err != nil || length < MinEpochLength || length > MaxEpochLength || length%time.Second != 0 {
		return fmt.Errorf("%w: %s: bad epoch_length %q", ErrNoKeyring, path, j.EpochLength)
	}
	if _, err := keyLen(j.Pseudonym); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNoKeyring, path, err)
	}
	k.params = KeyringParams{Origin: origin.UTC(), EpochLength: length, Pseudonym: j.Pseudonym}
	k.originMs = origin.UnixMilli()
	k.lengthMs = length.Milliseconds()
	k.destroyedBefore = j.DestroyedBefore
	return nil
}

// readPrivate reads a file after checking its permissions.
func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkPrivate(path, fi); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// Dir returns the key directory's path.
func (k *Keyring) Dir() string { return k.dir }

// Params returns the key directory's fixed parameters.
func (k *Keyring) Params() KeyringParams { return k.params }

// DestroyedBefore returns the first epoch that has not been destroyed:
// every epoch below it is gone for good, and no key is ever created for it
// again.
func (k *Keyring) DestroyedBefore() uint32 { return k.destroyedBefore }

// AuditLog returns the default audit log path, audit.log in the directory.
func (k *Keyring) AuditLog() string { return filepath.Join(k.dir, auditFileName) }

// EpochAt returns the epoch containing t. Times before the origin are
// ErrBeforeOrigin.
func (k *Keyring) EpochAt(t time.Time) (uint32, error) {
	e, ok := k.epochMs(t.UnixMilli())
	if !ok {
		return 0, ErrBeforeOrigin
	}
	return e, nil
}

// epochMs returns the epoch of Unix milliseconds ms; ok is false before the
// origin or beyond the uint32 epoch range.
func (k *Keyring) epochMs(ms int64) (uint32, bool) {
	d := ms - k.originMs
	if d < 0 {
		return 0, false
	}
	e := d / k.lengthMs
	if e > int64(^uint32(0)) {
		return 0, false
	}
	return uint32(e), true
}

// EpochStart returns the start of epoch e; the epoch ends where e+1 starts.
func (k *Keyring) EpochStart(e uint32) time.Time {
	return time.UnixMilli(k.originMs + int64(e)*k.lengthMs).UTC()
}

func (k *Keyring) keyPath(e uint32) string {
	return filepath.Join(k.dir, fmt.Sprintf("%s%010d%s", keyFilePrefix, e, keyFileSuffix))
}

// Epochs lists the epochs that have a key file, in ascending order.
func (k *Keyring) Epochs() ([]uint32, error) {
	ents, err := os.ReadDir(k.dir)
	if err != nil {
		return nil, fmt.Errorf("list key directory: %w", err)
	}
	var out []uint32
	for _, de := range ents {
		name := de.Name()
		if !strings.HasPrefix(name, keyFilePrefix) || !strings.HasSuffix(name, keyFileSuffix) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, keyFilePrefix), keyFileSuffix), 10, 32)
		if err != nil {
			continue
		}
		out = append(out, uint32(n))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// CreateKey creates a random key for epoch e (from rnd, or crypto/rand when
// nil) unless one exists; created reports whether this call created it.
// Destroyed epochs are ErrEpochDestroyed.
func (k *Keyring) CreateKey(e uint32, rnd io.Reader) (created bool, err error) {
	if e < k.destroyedBefore {
		return false, fmt.Errorf("%w: epoch %d (epochs before %d were destroyed)", ErrEpochDestroyed, e, k.destroyedBefore)
	}
	n, _ := keyLen(k.params.Pseudonym)
	key := make([]byte, n)
	if rnd == nil {
		rnd = rand.Reader
	}
	if _, err := io.ReadFull(rnd, key); err != nil {
		return false, fmt.Errorf("generate key: %w", err)
	}
	data, _ := json.MarshalIndent(keyFileJSON{
		Format:    keyFileFormat,
		Epoch:     e,
		Pseudonym: k.params.Pseudonym,
		Key:       hex.EncodeToString(key),
		Created:   time.Now().UTC().Format(time.RFC3339),
	}, "", "  ")
	clear(key)
	created, err = writeExclusive(k.dir, filepath.Base(k.keyPath(e)), append(data, '\n'))
	clear(data)
	if err != nil {
		return false, fmt.Errorf("create key for epoch %d: %w", e, err)
	}
	return created, nil
}

// writeExclusive writes data to dir/name (mode 0600) unless that file exists,
// atomically: a temporary file is written and synced, then hard-linked to
// the final name, which fails if another writer got there first.
func writeExclusive(dir, name string, data []byte) (created bool, err error) {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(privateMode); err != nil {
		f.Close()
		return false, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	if err := os.Link(tmp, filepath.Join(dir, name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	syncDir(dir)
	return true, nil
}

// replaceFile atomically replaces dir/name with data (mode 0600).
func replaceFile(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(privateMode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// loadKey reads and checks the key file of epoch e. A missing file is
// ErrNoKey; a file that group or others can access is ErrLoosePermissions.
func (k *Keyring) loadKey(e uint32) (*epochCipher, error) {
	path := k.keyPath(e)
	data, err := readPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		if e < k.destroyedBefore {
			return nil, fmt.Errorf("%w: epoch %d was destroyed (epochs before %d are gone)", ErrNoKey, e, k.destroyedBefore)
		}
		return nil, fmt.Errorf("%w: epoch %d has no key in %s", ErrNoKey, e, k.dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read key of epoch %d: %w", e, err)
	}
	defer clear(data)
	var j keyFileJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: %s is not a key file", ErrBadKey, path)
	}
	if j.Format != keyFileFormat || j.Epoch != e {
		return nil, fmt.Errorf("%w: %s: format %q epoch %d, want %q epoch %d", ErrBadKey, path, j.Format, j.Epoch, keyFileFormat, e)
	}
	if j.Pseudonym != k.params.Pseudonym {
		return nil, fmt.Errorf("%w: %s is a %s key, the directory uses %s", ErrBadKey, path, j.Pseudonym, k.params.Pseudonym)
	}
	key, err := hex.DecodeString(j.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: key is not hex", ErrBadKey, path)
	}
	defer clear(key)
	c, err := newEpochCipher(e, j.Pseudonym, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, path, err)
	}
	return c, nil
}

// Reveal returns the subscriber address behind pseudonym p of epoch e. It
// needs the epoch's key (ErrNoKey otherwise). The result is only as good as
// the key and epoch given: a token from another epoch or key directory
// decrypts to a random address, so callers check the result (see
// CheckRevealed). Use it only through `ccflow reveal`, which writes the audit
// record first.
func (k *Keyring) Reveal(e uint32, p flow.Pseudonym) (netip.Addr, error) {
	c, err := k.loadKey(e)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.AddrFrom16(c.reveal(p)).Unmap(), nil
}

// CheckRevealed checks that a revealed address is plausibly right, that is,
// that the token was revealed with the key and epoch it was made with. With
// subscriber prefixes (subs not nil) the address must lie in one. Without
// them, an IPv4 result must have come out IPv4-mapped (a wrong AES key does
// so with probability 2^-96), and an IPv6 result cannot be checked and is
// refused. Crypto-PAn results always need subs. Failures are ErrWrongKey.
func (k *Keyring) CheckRevealed(a netip.Addr, subs *Subscribers) error {
	if subs != nil {
		if !subs.Contains(a) {
			return fmt.Errorf("%w: the token does not decrypt to a subscriber address", ErrWrongKey)
		}
		return nil
	}
	if k.params.Pseudonym == ModeCryptoPAn {
		return fmt.Errorf("%w: cryptopan results can only be checked against the subscriber prefixes; pass --subscribers or set privacy.subscribers_file", ErrWrongKey)
	}
	if !a.Is4() {
		return fmt.Errorf("%w: the token does not decrypt to an IPv4 address, and without subscriber prefixes an IPv6 result cannot be checked; pass --subscribers or set privacy.subscribers_file", ErrWrongKey)
	}
	return nil
}

// Destroy removes the keys of every epoch that ends at or before `before`,
// making those epochs' pseudonyms irreversible, and records in keyring.json
// that they are destroyed so that no key is ever created for them again. The
// epoch containing now (and later ones) cannot be destroyed. Key files are
// overwritten with zeros before they are removed; see docs/privacy.md for
// what that does not cover (copies, backups, snapshots). It returns the
// epochs whose key files were removed.
func (k *Keyring) Destroy(before, now time.Time) ([]uint32, error) {
	if err := k.Refresh(); err != nil {
		return nil, err
	}
	cut, ok := k.epochMs(before.UnixMilli())
	if !ok {
		return nil, nil // before the origin: nothing to destroy
	}
	// cut is the epoch containing `before`: the epochs below it end at or
	// before `before`; cut itself ends after it and is kept.
	cur, ok := k.epochMs(now.UnixMilli())
	if ok && cut > cur {
		return nil, fmt.Errorf("refusing to destroy the current epoch %d (starts %s): --before must not be later than its start", cur, k.EpochStart(cur).Format(time.RFC3339))
	}
	if cut > k.destroyedBefore {
		data, _ := json.MarshalIndent(keyringJSON{
			Format:          keyringFormat,
			Origin:          k.params.Origin.Format(time.RFC3339),
			EpochLength:     k.params.EpochLength.String(),
			Pseudonym:       k.params.Pseudonym,
			DestroyedBefore: cut,
		}, "", "  ")
		if err := replaceFile(k.dir, keyringFile, append(data, '\n')); err != nil {
			return nil, fmt.Errorf("record destroyed epochs: %w", err)
		}
		k.destroyedBefore = cut
	}
	epochs, err := k.Epochs()
	if err != nil {
		return nil, err
	}
	var gone []uint32
	for _, e := range epochs {
		if e >= k.destroyedBefore {
			break
		}
		if err := shred(k.keyPath(e)); err != nil {
			return gone, fmt.Errorf("destroy key of epoch %d: %w", e, err)
		}
		gone = append(gone, e)
	}
	syncDir(k.dir)
	return gone, nil
}

// shred overwrites a file with zeros, syncs it and removes it.
func shred(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.WriteAt(make([]byte, fi.Size()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Remove(path)
}
