package privacy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The reveal audit log is a file of JSON lines, one AuditEntry per line,
// each line exactly the canonical encoding of its entry (encoding/json of
// AuditEntry, fields in declaration order). Entries are numbered from 1 and
// chained: Prev is the previous entry's Hash (64 zeros for entry 1), and
// Hash is the SHA-256 of the entry's canonical encoding with Hash empty.
// Editing, deleting, inserting or reordering an entry therefore breaks the
// chain at that entry. Removing the newest entries, or rewriting the whole
// chain from some entry on, can only be detected against a head recorded
// elsewhere (AuditHead; `ccflow audit verify --head`), so reveal prints the
// new head and docs/privacy.md says where to keep it.

// genesisHash is the Prev of the first entry.
var genesisHash = strings.Repeat("0", 64)

// Outcomes recorded in AuditEntry.Outcome (failures add ": " and a reason).
const (
	OutcomeRevealed = "revealed"
	OutcomeFailed   = "failed"
)

// AuditEntry is one reveal, as recorded in the audit log. It never holds the
// revealed address: token and epoch identify the subscriber to whoever holds
// the key.
type AuditEntry struct {
	// Seq numbers the entries from 1.
	Seq uint64 `json:"seq"`
	// Time is when the reveal was done (UTC).
	Time time.Time `json:"time"`
	// Operator is who asked for the reveal (--operator, else the OS user).
	Operator string `json:"operator"`
	// User is the OS user that ran the command.
	User string `json:"user"`
	// Host is the host name the command ran on.
	Host string `json:"host"`
	// Reason is why (for example an abuse ticket number).
	Reason string `json:"reason"`
	// Epoch is the key epoch of the token.
	Epoch uint32 `json:"epoch"`
	// Token is the pseudonym revealed (32 hex digits).
	Token string `json:"token"`
	// Outcome is OutcomeRevealed, or OutcomeFailed with a reason.
	Outcome string `json:"outcome"`
	// Prev is the Hash of the previous entry.
	Prev string `json:"prev"`
	// Hash is the SHA-256 (hex) of this entry's encoding with Hash empty.
	Hash string `json:"hash"`
}

func (e AuditEntry) computeHash() string {
	e.Hash = ""
	b, _ := json.Marshal(e)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// AuditHead is the newest entry of an intact audit log: record it outside
// the log (a ticket, a remote syslog) to detect later truncation or
// rewriting.
type AuditHead struct {
	// Entries is the number of entries (the Seq of the newest).
	Entries uint64
	// Hash is the newest entry's hash (genesis zeros for an empty log).
	Hash string
}

// String returns the head as "SEQ:HASH", the form `ccflow audit verify
// --head` takes.
func (h AuditHead) String() string { return fmt.Sprintf("%d:%s", h.Entries, h.Hash) }

// ParseAuditHead parses the "SEQ:HASH" form of an AuditHead.
func ParseAuditHead(s string) (AuditHead, error) {
	n, h, ok := strings.Cut(s, ":")
	seq, err := strconv.ParseUint(n, 10, 64)
	if !ok || err != nil || len(h) != 64 {
		return AuditHead{}, fmt.Errorf("audit head must be SEQ:HASH (64 hex digits), got %q", s)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return AuditHead{}, fmt.Errorf("audit head hash is not hex: %q", h)
	}
	return AuditHead{Entries: seq, Hash: strings.ToLower(h)}, nil
}

// AuditError says where an audit log's chain breaks. It wraps
// ErrAuditBroken.
type AuditError struct {
	// Line is the 1-based line of the first bad entry.
	Line int
	// Seq is the entry number expected at that line.
	Seq uint64
	// Problem says what is wrong.
	Problem string
}

// Error names the first bad entry: "audit log broken at line L (entry S): ...".
func (e *AuditError) Error() string {
	return fmt.Sprintf("audit log broken at line %d (entry %d): %s", e.Line, e.Seq, e.Problem)
}

// Unwrap returns ErrAuditBroken.
func (e *AuditError) Unwrap() error { return ErrAuditBroken }

// VerifyAudit reads an audit log and checks every entry's encoding, number,
// link and hash. It returns the head of an intact log, or an *AuditError
// naming the first bad entry. When want is not nil, the log must also
// contain want's entry with want's hash (detecting truncation and
// rewriting since want was recorded).
func VerifyAudit(r io.Reader, want *AuditHead) (AuditHead, error) {
	br := bufio.NewReader(r)
	head := AuditHead{Hash: genesisHash}
	var prev AuditEntry
	anchored := want == nil || want.Entries == 0 && want.Hash == genesisHash
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(b) == 0 && errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return head, fmt.Errorf("read audit log: %w", err)
		}
		expect := head.Entries + 1
		bad := func(format string, args ...any) error {
			return &AuditError{Line: line, Seq: expect, Problem: fmt.Sprintf(format, args...)}
		}
		if b[len(b)-1] != '\n' {
			return head, bad("the last line is incomplete (no newline): a write was cut short or the entry was edited")
		}
		b = b[:len(b)-1]
		var e AuditEntry
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || dec.More() {
			return head, bad("not an audit entry: the line was edited or inserted")
		}
		if canon, _ := json.Marshal(e); !bytes.Equal(canon, b) {
			return head, bad("not a canonical audit entry: the line was edited or inserted")
		}
		if e.Seq != expect {
			return head, bad("found entry %d where entry %d belongs: an entry was deleted, inserted or moved", e.Seq, expect)
		}
		if e.Hash != e.computeHash() {
			return head, bad("content does not match its hash: the entry was edited")
		}
		if e.Prev != head.Hash {
			if expect > 1 {
				// The link is checked against a previous entry that
				// verified on its own: that entry was rewritten
				// together with its hash.
				return head, &AuditError{Line: line - 1, Seq: prev.Seq, Problem: fmt.Sprintf("entry %d no longer links to it: the entry was edited and its hash recomputed", expect)}
			}
			return head, bad("the first entry does not start the chain: entries before it were removed")
		}
		prev = e
		head = AuditHead{Entries: e.Seq, Hash: e.Hash}
		if want != nil && e.Seq == want.Entries {
			if e.Hash != want.Hash {
				return head, bad("hash differs from the recorded head %s: the log was rewritten", want)
			}
			anchored = true
		}
	}
	if !anchored {
		return head, &AuditError{Line: int(head.Entries) + 1, Seq: head.Entries + 1, Problem: fmt.Sprintf("the log ends at entry %d, before the recorded head %s: entries were removed", head.Entries, want)}
	}
	return head, nil
}

// VerifyAuditFile is VerifyAudit on a file.
func VerifyAuditFile(path string, want *AuditHead) (AuditHead, error) {
	f, err := os.Open(path)
	if err != nil {
		return AuditHead{}, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	return VerifyAudit(f, want)
}

// AppendAudit appends e to the audit log at path (created with mode 0600),
// filling in Seq, Prev and Hash, and returns the entry as written. It holds
// an exclusive lock on the file, verifies the whole chain first (refusing to
// append to a broken log), and syncs the file before returning.
func AppendAudit(path string, e AuditEntry) (AuditEntry, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, privateMode)
	if err != nil {
		return e, fmt.Errorf("open audit log: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return e, fmt.Errorf("lock audit log: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // released on close anyway
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return e, fmt.Errorf("read audit log: %w", err)
	}
	head, err := VerifyAudit(f, nil)
	if err != nil {
		return e, fmt.Errorf("refusing to append to %s: %w", path, err)
	}
	e.Seq = head.Entries + 1
	e.Time = e.Time.UTC()
	e.Prev = head.Hash
	e.Hash = e.computeHash()
	line, _ := json.Marshal(e)
	if _, err := f.Write(append(line, '\n')); err != nil {
		return e, fmt.Errorf("write audit log: %w", err)
	}
	if err := f.Sync(); err != nil {
		return e, fmt.Errorf("sync audit log: %w", err)
	}
	return e, nil
}
