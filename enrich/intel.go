package enrich

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gaissmai/bart"
)

// parseIntel reads one intel list. With column empty, every line holds an
// address or CIDR as its first field; '#' and ';' start comments (plain
// lists, Spamhaus DROP). With column set, lines are CSV records and the
// address is in that column: a header name or a 1-based number. Lines that
// start with '#' are comments; a commented header line such as abuse.ch's
// `# "first_seen_utc","dst_ip",...` counts as the header. A value may be
// ADDR, CIDR, ADDR:PORT or [ADDR]:PORT; IPv4-mapped IPv6 entries become IPv4.
// Any other value is an error naming the line.
func parseIntel(r io.Reader, column string) ([]netip.Prefix, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var out []netip.Prefix
	colIdx := -1 // 0-based column; -1 while the header is not known
	colName := ""
	if column != "" {
		if n, err := strconv.Atoi(column); err == nil {
			colIdx = n - 1
		} else {
			colName = strings.ToLower(strings.TrimSpace(column))
		}
	}
	headerFromComment := false
	sawData := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if column == "" {
			if line[0] == '#' || line[0] == ';' {
				continue
			}
			if i := bytes.IndexAny(line, "#;"); i >= 0 {
				line = line[:i]
			}
			f := bytes.Fields(line)
			if len(f) == 0 {
				continue
			}
			p, err := parseEntry(string(f[0]))
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			out = append(out, p)
			continue
		}
		if line[0] == '#' {
			if colName != "" && !sawData {
				if rec, err := csvFields(bytes.TrimLeft(line, "# \t")); err == nil {
					if i := findColumn(rec, colName); i >= 0 {
						colIdx, headerFromComment = i, true
					}
				}
			}
			continue
		}
		rec, err := csvFields(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if !sawData && colName != "" {
			sawData = true
			if i := findColumn(rec, colName); i >= 0 {
				// An uncommented header (it may repeat a commented one).
				colIdx = i
				continue
			}
			if !headerFromComment {
				return nil, fmt.Errorf("line %d: no column named %q in the header (the first line that is not a comment)", n, column)
			}
		}
		sawData = true
		if colIdx >= len(rec) {
			return nil, fmt.Errorf("line %d: has %d columns, the address is in column %d", n, len(rec), colIdx+1)
		}
		v := strings.TrimSpace(rec[colIdx])
		if v == "" {
			continue
		}
		p, err := parseEntry(v)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func csvFields(line []byte) ([]string, error) {
	cr := csv.NewReader(bytes.NewReader(line))
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.TrimLeadingSpace = true
	rec, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("bad CSV: %w", err)
	}
	return rec, nil
}

func findColumn(rec []string, name string) int {
	for i, f := range rec {
		if strings.ToLower(strings.TrimSpace(f)) == name {
			return i
		}
	}
	return -1
}

// parseEntry parses ADDR, CIDR, ADDR:PORT or [ADDR]:PORT into a masked
// prefix; IPv4-mapped IPv6 becomes IPv4.
func parseEntry(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		pp, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not an address or CIDR", s)
		}
		p = pp.Masked()
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			ap, err2 := netip.ParseAddrPort(s)
			if err2 != nil {
				return p, fmt.Errorf("%q is not an address or CIDR", s)
			}
			a = ap.Addr()
		}
		if a.Zone() != "" {
			return p, fmt.Errorf("%q: zones are not allowed", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	// Masked prefixes shorter than /96 never keep the ::ffff: bits.
	if a := p.Addr(); a.Is4In6() {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// intelTable answers which lists contain an address. Every prefix holds
// the set of lists of itself and of all its supernets, so the
// longest-prefix match alone gives the complete set. Sets are stored as
// small dense IDs into names; ID 0 is the empty set.
type intelTable struct {
	table *bart.Table[uint32]
	// names holds, for every set a lookup can return, the comma-joined
	// list names in configuration order.
	names []string
}

// buildIntel combines the parsed lists (index = bit) into one table.
func buildIntel(names []string, lists [][]netip.Prefix) *intelTable {
	sets := &bart.Table[uint64]{}
	for i, l := range lists {
		bit := uint64(1) << i
		for _, p := range l {
			sets.Modify(p, func(old uint64, _ bool) (uint64, bool) { return old | bit, false })
		}
	}
	it := &intelTable{table: &bart.Table[uint32]{}, names: []string{""}}
	ids := map[uint64]uint32{0: 0}
	for p, v := range sets.All() {
		for _, sv := range sets.Supernets(p) {
			v |= sv
		}
		id, ok := ids[v]
		if !ok {
			var parts []string
			for i := range names {
				if v&(1<<i) != 0 {
					parts = append(parts, names[i])
				}
			}
			id = uint32(len(it.names))
			ids[v] = id
			it.names = append(it.names, strings.Join(parts, ","))
		}
		it.table.Insert(p, id)
	}
	return it
}

// lookup returns the comma-joined names of the lists that contain a (a
// pointer into the table, valid as long as the table).
func (t *intelTable) lookup(a netip.Addr) *string {
	id, _ := t.table.Lookup(a)
	return &t.names[id]
}
