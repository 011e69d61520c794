package detect

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/ccflow/ccflow/flow"
)

//go:embed allowlists/*.txt
var builtinFS embed.FS

// builtinAllowlists maps the names of the built-in lists to their files.
var builtinAllowlists = map[string]string{
	"ntp":     "allowlists/ntp.txt",
	"dns":     "allowlists/dns.txt",
	"push":    "allowlists/push.txt",
	"special": "allowlists/special.txt",
	"cdn":     "allowlists/cdn.txt",
}

// BuiltinAllowlists returns the names of the built-in allowlists, sorted.
func BuiltinAllowlists() []string {
	names := make([]string, 0, len(builtinAllowlists))
	for n := range builtinAllowlists {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// BuiltinAllowlist returns the text of a built-in allowlist (the files
// under detect/allowlists, compiled into the binary).
func BuiltinAllowlist(name string) ([]byte, error) {
	p, ok := builtinAllowlists[name]
	if !ok {
		return nil, fmt.Errorf("unknown built-in allowlist %q", name)
	}
	return builtinFS.ReadFile(p)
}

// NewBuiltinAllowlist returns an allowlist holding the named built-in
// lists, in the order given. Operator files are added with Add.
func NewBuiltinAllowlist(names []string) (*Allowlist, error) {
	a := NewAllowlist()
	for _, n := range names {
		b, err := BuiltinAllowlist(n)
		if err != nil {
			return nil, err
		}
		if err := a.Add(n, bytes.NewReader(b)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Allowlist is a set of remote-endpoint rules. A rule is a prefix (or any
// address) with an optional port range and protocol. It is immutable once
// built and safe for concurrent reads.
type Allowlist struct {
	rules []allowRule
	// byLen indexes rules by prefix length, then by masked prefix.
	byLen map[int]map[netip.Prefix][]int
	lens  []int
	any   []int // rules with no prefix ("*")
}

type allowRule struct {
	list             string
	text             string
	comment          string
	lo, hi           uint16 // port range; 0,65535 for any
	proto            uint8  // 0 for any
	prefix           netip.Prefix
	hasPrefix, ports bool
}

// NewAllowlist returns an empty allowlist; Add fills it.
func NewAllowlist() *Allowlist {
	return &Allowlist{byLen: map[int]map[netip.Prefix][]int{}}
}

// Len returns the number of rules.
func (a *Allowlist) Len() int { return len(a.rules) }

// Add parses the rules of one list from r. name is how suppressed
// candidates name the list. Lines hold a CIDR (or a bare address, or "*"
// for any address), then optionally PORT, PORT-PORT or "*", optionally
// followed by /PROTO (tcp, udp, or a number); "#" starts a comment. Errors
// name the line.
func (a *Allowlist) Add(name string, r io.Reader) error {
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text, comment, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) > 2 {
			return fmt.Errorf("allowlist %s line %d: want ADDRESS [PORT[/PROTO]], got %d fields", name, line, len(fields))
		}
		rule := allowRule{list: name, text: strings.Join(fields, " "), comment: strings.TrimSpace(comment), hi: 65535}
		if fields[0] != "*" {
			p, err := parsePrefix(fields[0])
			if err != nil {
				return fmt.Errorf("allowlist %s line %d: %w", name, line, err)
			}
			rule.prefix, rule.hasPrefix = p, true
		}
		if len(fields) == 2 {
			if err := rule.parsePort(fields[1]); err != nil {
				return fmt.Errorf("allowlist %s line %d: %w", name, line, err)
			}
		}
		if !rule.hasPrefix && !rule.ports && rule.proto == 0 {
			return fmt.Errorf("allowlist %s line %d: a rule for every address needs a port or protocol", name, line)
		}
		i := len(a.rules)
		a.rules = append(a.rules, rule)
		if !rule.hasPrefix {
			a.any = append(a.any, i)
			continue
		}
		bits := rule.prefix.Bits()
		m := a.byLen[bits]
		if m == nil {
			m = map[netip.Prefix][]int{}
			a.byLen[bits] = m
			a.lens = append(a.lens, bits)
			slices.Sort(a.lens)
		}
		m[rule.prefix] = append(m[rule.prefix], i)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read allowlist %s: %w", name, err)
	}
	return nil
}

// parsePrefix parses a CIDR or a bare address; IPv4 prefixes are stored
// IPv4-mapped so that one table serves both families.
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("bad prefix %q", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("bad address %q", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4() {
		p = netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
	}
	return p.Masked(), nil
}

func (r *allowRule) parsePort(s string) error {
	ports, proto, hasProto := strings.Cut(s, "/")
	if hasProto {
		p, err := flow.ParseIPProto(proto)
		if err != nil {
			return err
		}
		r.proto = uint8(p)
	}
	if ports == "*" || ports == "" {
		return nil
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	l, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return fmt.Errorf("bad port %q", ports)
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(hi, 10, 16); err != nil || h < l {
			return fmt.Errorf("bad port range %q", ports)
		}
	}
	r.lo, r.hi, r.ports = uint16(l), uint16(h), true
	return nil
}

func (r *allowRule) matchPort(port uint16, proto uint8) bool {
	return (r.proto == 0 || r.proto == proto) && port >= r.lo && port <= r.hi
}

// Match returns the first rule (in the order added) that covers the
// endpoint, as "LIST: RULE (COMMENT)", or "" when none does.
func (a *Allowlist) Match(addr flow.Addr, port uint16, proto uint8) string {
	if a == nil || len(a.rules) == 0 {
		return ""
	}
	best := -1
	for _, i := range a.any {
		if a.rules[i].matchPort(port, proto) {
			best = i
			break
		}
	}
	ip := netip.AddrFrom16(addr)
	for _, bits := range a.lens {
		p, err := ip.Prefix(bits)
		if err != nil {
			continue
		}
		for _, i := range a.byLen[bits][p] {
			if (best < 0 || i < best) && a.rules[i].matchPort(port, proto) {
				best = i
				break
			}
		}
	}
	if best < 0 {
		return ""
	}
	r := &a.rules[best]
	if r.comment != "" {
		return r.list + ": " + r.text + " (" + r.comment + ")"
	}
	return r.list + ": " + r.text
}

func quote(s string) string { return strconv.Quote(s) }
func itoa(i int) string     { return strconv.Itoa(i) }
