package privacy

import (
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ccflow/ccflow/flow"
)

// Redacted is what the redaction backstop puts in place of a subscriber
// address, like flow.RawAddr's String method.
const Redacted = "REDACTED"

// Redactor is the log redaction backstop (privacy invariant P1): installed as
// a slog handler's ReplaceAttr, it removes every subscriber address from log
// attributes, whatever its form. Address types that know they hold subscriber
// data (flow.RawAddr, flow.MAC) already log "REDACTED"; the Redactor catches
// the rest:
//
//   - netip.Addr, netip.AddrPort, netip.Prefix, net.IP, 4- and 16-byte
//     slices;
//   - any value holding a flow.RawAddr or flow.MAC (a whole flow.Record),
//     redacted whole, because encoding/json would print their bytes;
//   - anything else whose rendering by the text handler (fmt %+v, so
//     errors, Stringers, structs, pointers, *net.UDPAddr), MarshalText or
//     encoding/json contains a subscriber address;
//   - strings, keys and the message, scanned for addresses as dotted quads
//     (also with - or _ separators and reversed, as in PTR names), IPv6
//     and IPv4-mapped text, 8 or 32 hex digits, decimal byte lists
//     ("[192 0 2 7]", "[192,0,2,7]") and netip.Addr internals.
//
// Integers are not interpreted as addresses (too many counters and
// timestamps would look like one).
//
// Until it is bound to the subscriber prefixes (by New through
// Deps.Redactor) a Redactor redacts every address it finds, so a logger can
// be built before the prefixes are loaded without a window of leaks. After
// that it redacts subscriber addresses only, so exporter and remote
// addresses stay readable. A Redactor is safe for concurrent use.
type Redactor struct {
	subs     atomic.Pointer[Subscribers]
	redacted atomic.Uint64
}

// NewRedactor returns a Redactor that redacts every address until bound to
// the subscriber prefixes.
func NewRedactor() *Redactor { return &Redactor{} }

func (r *Redactor) bind(s *Subscribers) { r.subs.Store(s) }

// Redacted returns how many attribute values (and keys) were redacted.
func (r *Redactor) Redacted() uint64 { return r.redacted.Load() }

// isSub reports whether a must be redacted.
func (r *Redactor) isSub(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	s := r.subs.Load()
	if s == nil {
		return !a.IsUnspecified()
	}
	return s.Contains(a)
}

func (r *Redactor) isSub16(b []byte) bool {
	a, ok := netip.AddrFromSlice(b)
	return ok && r.isSub(a)
}

// ReplaceAttr implements slog.HandlerOptions.ReplaceAttr: it returns a with
// every subscriber address removed from its key and value. Pass it to the
// handler of every logger (cmd/ccflow's newLogger does).
func (r *Redactor) ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if k, ok := r.RedactString(a.Key); ok {
		a.Key = k
	}
	switch a.Value.Kind() {
	case slog.KindString:
		if s, ok := r.RedactString(a.Value.String()); ok {
			a.Value = slog.StringValue(s)
		}
	case slog.KindAny:
		if v, ok := r.redactAny(a.Value.Any()); ok {
			r.redacted.Add(1)
			a.Value = v
		}
	}
	return a
}

// redactAny returns the replacement of v when v holds a subscriber address.
// Besides the address types it knows, it renders v the way slog's handlers
// do (fmt %+v for the text handler, MarshalText, json.Marshal for the JSON
// handler) and scans each rendering, so an address hidden in a struct, an
// error or a byte array is found in whatever form a handler would print it.
func (r *Redactor) redactAny(v any) (slog.Value, bool) {
	redacted := slog.StringValue(Redacted)
	switch x := v.(type) {
	case nil:
		return slog.Value{}, false
	case netip.Addr:
		return redacted, r.isSub(x)
	case netip.AddrPort:
		return redacted, r.isSub(x.Addr())
	case netip.Prefix:
		return redacted, r.isSub(x.Addr())
	case net.IP:
		return redacted, r.isSub16(x)
	case []byte:
		if (len(x) == 4 || len(x) == 16) && r.isSub16(x) {
			return redacted, true
		}
		if s, ok := r.redactString(string(x)); ok {
			return slog.StringValue(s), true
		}
		return slog.Value{}, false
	}
	if holdsRaw(reflect.TypeOf(v)) {
		return redacted, true
	}
	plus, okPlus := r.redactString(fmt.Sprintf("%+v", v))
	if okPlus {
		return slog.StringValue(plus), true
	}
	if tm, ok := v.(encoding.TextMarshaler); ok {
		if b, err := tm.MarshalText(); err == nil {
			if _, ok := r.redactString(string(b)); ok {
				return redacted, true
			}
		}
	}
	if b, err := json.Marshal(v); err == nil {
		if _, ok := r.redactString(string(b)); ok {
			return redacted, true
		}
	}
	return slog.Value{}, false
}

var (
	rawAddrType = reflect.TypeFor[flow.RawAddr]()
	macType     = reflect.TypeFor[flow.MAC]()
	holdsCache  sync.Map // reflect.Type -> bool
)

// holdsRaw reports whether values of type t contain a flow.RawAddr or a
// flow.MAC (for example a whole flow.Record): such values print REDACTED
// for those fields only through fmt and slog.LogValuer, but encoding/json
// would print their bytes, so the whole value is redacted.
func holdsRaw(t reflect.Type) bool {
	if t == nil {
		return false
	}
	if v, ok := holdsCache.Load(t); ok {
		return v.(bool)
	}
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type) bool
	walk = func(t reflect.Type) bool {
		if t == rawAddrType || t == macType {
			return true
		}
		if seen[t] {
			return false
		}
		seen[t] = true
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			return walk(t.Elem())
		case reflect.Map:
			return walk(t.Key()) || walk(t.Elem())
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				if walk(t.Field(i).Type) {
					return true
				}
			}
		}
		return false
	}
	h := walk(t)
	holdsCache.Store(t, h)
	return h
}

// RedactString returns s with every subscriber address in it replaced by
// "REDACTED", and whether anything was replaced (which it counts).
func (r *Redactor) RedactString(s string) (string, bool) {
	out, ok := r.redactString(s)
	if ok {
		r.redacted.Add(1)
	}
	return out, ok
}

type span struct{ lo, hi int }

func (r *Redactor) redactString(s string) (string, bool) {
	var spans []span
	spans = r.quads(s, spans)
	spans = r.ipv6Tokens(s, spans)
	spans = r.hexRuns(s, spans)
	spans = r.byteLists(s, spans)
	spans = r.uint128s(s, spans)
	if len(spans) == 0 {
		return s, false
	}
	// Sort and merge, then rebuild.
	for i := 1; i < len(spans); i++ {
		for j := i; j > 0 && spans[j].lo < spans[j-1].lo; j-- {
			spans[j], spans[j-1] = spans[j-1], spans[j]
		}
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		if sp.hi <= last {
			continue // inside the previous span
		}
		if sp.lo >= last {
			b.WriteString(s[last:sp.lo])
			b.WriteString(Redacted)
		} // else it overlaps the previous span: extend it
		last = sp.hi
	}
	b.WriteString(s[last:])
	return b.String(), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// quads finds IPv4 addresses written as four decimal groups separated by
// '.', '-' or '_' (dotted quads, PTR-style host names), in either byte
// order, and appends the spans of subscriber addresses.
func (r *Redactor) quads(s string, spans []span) []span {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || (i > 0 && isDigit(s[i-1])) {
			continue
		}
		var q [4]byte
		j, sep, ok := i, byte(0), true
		for g := 0; g < 4 && ok; g++ {
			if g > 0 {
				if j >= len(s) || (s[j] != '.' && s[j] != '-' && s[j] != '_') || (sep != 0 && s[j] != sep) {
					ok = false
					break
				}
				sep = s[j]
				j++
			}
			n, k := 0, j
			for k < len(s) && isDigit(s[k]) && k-j < 4 {
				n = n*10 + int(s[k]-'0')
				k++
			}
			if k == j || k-j > 3 || n > 255 {
				ok = false
				break
			}
			q[g] = byte(n)
			j = k
		}
		if !ok || (j < len(s) && isDigit(s[j])) {
			continue
		}
		rev := [4]byte{q[3], q[2], q[1], q[0]}
		if r.isSub(netip.AddrFrom4(q)) || r.isSub(netip.AddrFrom4(rev)) {
			spans = append(spans, span{i, j})
		}
	}
	return spans
}

// ipv6Tokens finds IPv6 (and IPv4-mapped) text: maximal runs of hex digits,
// ':' and '.', with at least two colons, parsed whole, without a trailing
// ":port", and without trailing punctuation.
func (r *Redactor) ipv6Tokens(s string, spans []span) []span {
	for i := 0; i < len(s); {
		c := s[i]
		if !isHex(c) && c != ':' && c != '.' {
			i++
			continue
		}
		j := i
		colons := 0
		for j < len(s) && (isHex(s[j]) || s[j] == ':' || s[j] == '.') {
			if s[j] == ':' {
				colons++
			}
			j++
		}
		if colons >= 2 {
			tok := s[i:j]
			cands := [3]string{tok, strings.TrimRight(tok, ".:"), ""}
			if k := strings.LastIndexByte(tok, ':'); k > 0 {
				cands[2] = tok[:k]
			}
			for _, c := range cands {
				if a, err := netip.ParseAddr(c); err == nil && r.isSub(a.Unmap()) {
					spans = append(spans, span{i, j})
					break
				}
			}
		}
		i = j
	}
	return spans
}

// hexRuns finds maximal runs of exactly 8 or 32 hex digits (an IPv4 or a
// 16-byte address in hex) that decode to a subscriber address.
func (r *Redactor) hexRuns(s string, spans []span) []span {
	for i := 0; i < len(s); {
		if !isHex(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isHex(s[j]) {
			j++
		}
		if n := j - i; n == 8 || n == 32 {
			var b [16]byte
			if _, err := hex.Decode(b[:n/2], []byte(s[i:j])); err == nil && r.isSub16(b[:n/2]) {
				spans = append(spans, span{i, j})
			}
		}
		i = j
	}
	return spans
}

// byteLists finds lists of 4 or 16 decimal byte values in brackets, as fmt
// prints byte arrays ("[192 0 2 7]") and encoding/json prints them
// ("[192,0,2,7]"), that form a subscriber address.
func (r *Redactor) byteLists(s string, spans []span) []span {
	for i := 0; i < len(s); i++ {
		if s[i] != '[' {
			continue
		}
		var b [16]byte
		n, j, ok := 0, i+1, true
		for ok {
			for j < len(s) && (s[j] == ' ' || s[j] == ',') {
				j++
			}
			if j < len(s) && s[j] == ']' {
				break
			}
			v, k := 0, j
			for k < len(s) && isDigit(s[k]) && k-j < 4 {
				v = v*10 + int(s[k]-'0')
				k++
			}
			if k == j || k-j > 3 || v > 255 || n == 16 {
				ok = false
				break
			}
			b[n] = byte(v)
			n++
			j = k
		}
		if ok && (n == 4 || n == 16) && r.isSub16(b[:n]) {
			spans = append(spans, span{i, j + 1})
		}
	}
	return spans
}

// uint128s finds netip.Addr internals as fmt prints an unexported
// netip.Addr field ("{hi:0 lo:281473902969351}"), which no other form
// covers.
func (r *Redactor) uint128s(s string, spans []span) []span {
	for off := 0; ; {
		i := strings.Index(s[off:], "hi:")
		if i < 0 {
			return spans
		}
		i += off
		off = i + 3
		hi, j, ok := parseUint(s, i+3)
		if !ok || !strings.HasPrefix(s[j:], " lo:") {
			continue
		}
		lo, k, ok := parseUint(s, j+4)
		if !ok {
			continue
		}
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], hi)
		binary.BigEndian.PutUint64(b[8:], lo)
		if r.isSub16(b[:]) {
			spans = append(spans, span{i, k})
		}
	}
}

// parseUint parses the decimal digits of s from i on.
func parseUint(s string, i int) (v uint64, end int, ok bool) {
	j := i
	for j < len(s) && isDigit(s[j]) && j-i < 20 {
		v = v*10 + uint64(s[j]-'0')
		j++
	}
	return v, j, j > i
}
