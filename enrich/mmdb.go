package enrich

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/gaissmai/bart"
	maxminddb "github.com/oschwald/maxminddb-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
	"go4.org/netipx"
)

// mmdbData is what enrichment keeps of one MMDB file: its networks, with
// the values taken from their records, in a multibit trie (bart). The
// file's search tree is a binary trie, one memory access per bit; walking
// it once at load and answering from bart makes a cache miss about six
// times cheaper, and the file itself is not kept. Adjacent networks with
// the same value are merged first (a City database used for countries
// shrinks to the size of a Country database).
type mmdbData struct {
	// networks is the number of networks in the file; prefixes the
	// number left after merging.
	networks, prefixes int
	// as (ASN databases) and cc (country databases) map an address to
	// shared, interned values.
	as *bart.Table[*asInfo]
	cc *bart.Table[*string]
}

// asInfo is what an ASN record gives a flow.
type asInfo struct {
	asn      uint32
	org      string
	provider string
}

// loadMMDB reads a MaxMind-format database held in memory: it walks every
// network, decodes every distinct record once (as an ASN or as a country
// record, by kind), and, with verify, also decodes every record completely,
// so a corrupt file is refused at load instead of yielding wrong answers.
//
// Reader.Verify is not used: it also rejects readable databases over
// metadata (an empty description, as mmdbwriter-built and some third-party
// files have).
func loadMMDB(data []byte, kind sourceKind, verify bool, providers *providerTable) (*mmdbData, error) {
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, fmt.Errorf("not a valid MMDB file: %w", err)
	}
	d := &mmdbData{}
	var (
		asAgg     merger[*asInfo]
		ccAgg     merger[*string]
		asByOff   = map[uintptr]*asInfo{}
		ccByOff   = map[uintptr]*string{}
		countries = map[string]*string{}
	)
	if kind == srcASN {
		d.as = &bart.Table[*asInfo]{}
		asAgg.t = d.as
	} else {
		d.cc = &bart.Table[*string]{}
		ccAgg.t = d.cc
	}
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return nil, fmt.Errorf("corrupt MMDB file: %w", err)
		}
		d.networks++
		p, off := res.Prefix(), res.Offset()
		if kind == srcASN {
			ai := asByOff[off]
			if ai == nil {
				rec, err := decodeRecord(res, verify)
				if err != nil {
					return nil, err
				}
				ai = &asInfo{asn: rec.ASN, org: rec.Org, provider: providers.class(rec.ASN, rec.Org)}
				asByOff[off] = ai
			}
			d.prefixes += asAgg.add(p, ai)
			continue
		}
		cc := ccByOff[off]
		if cc == nil {
			rec, err := decodeRecord(res, verify)
			if err != nil {
				return nil, err
			}
			if cc = countries[rec.Country]; cc == nil {
				code := rec.Country
				cc = &code
				countries[code] = cc
			}
			ccByOff[off] = cc
		}
		d.prefixes += ccAgg.add(p, cc)
	}
	d.prefixes += asAgg.flush() + ccAgg.flush()
	return d, nil
}

// decodeRecord decodes the record of res; with verify it first decodes
// all of it.
func decodeRecord(res maxminddb.Result, verify bool) (record, error) {
	var rec record
	if verify {
		var v any
		if err := res.Decode(&v); err != nil {
			return rec, fmt.Errorf("corrupt MMDB file: record of %s: %w", res.Prefix(), err)
		}
	}
	if err := res.Decode(&rec); err != nil {
		return rec, fmt.Errorf("corrupt MMDB file: record of %s: %w", res.Prefix(), err)
	}
	return rec, nil
}

// merger inserts networks, given in address order, into a table, merging
// adjacent networks with the same value into as few prefixes as possible.
type merger[V comparable] struct {
	t          *bart.Table[V]
	first, end netip.Addr // the pending range
	v          V
}

// add adds p with value v and returns the number of prefixes inserted.
func (m *merger[V]) add(p netip.Prefix, v V) int {
	last := netipx.PrefixLastIP(p)
	if m.first.IsValid() && v == m.v && m.end.Is4() == p.Addr().Is4() && m.end.Next() == p.Addr() {
		m.end = last
		return 0
	}
	n := m.flush()
	m.first, m.end, m.v = p.Addr(), last, v
	return n
}

// flush inserts the pending range.
func (m *merger[V]) flush() int {
	if !m.first.IsValid() {
		return 0
	}
	ps := netipx.IPRangeFrom(m.first, m.end).Prefixes()
	for _, p := range ps {
		m.t.Insert(p, m.v)
	}
	m.first = netip.Addr{}
	return len(ps)
}

// unwrapPath drops the *os.PathError wrapper, whose text repeats the file
// name that the caller already puts in its message.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// record is what enrichment takes from an MMDB record. It decodes the
// layouts of the common free databases:
//
//   - MaxMind GeoLite2/GeoIP2 and DB-IP: autonomous_system_number,
//     autonomous_system_organization; country.iso_code, falling back to
//     registered_country.iso_code.
//   - IPinfo (Lite, country_asn, ASN, country): asn as "AS15169", as_name or
//     name; country_code, or country when it is a two-letter code.
type record struct {
	ASN     uint32
	Org     string
	Country string
}

var _ mmdbdata.CursorUnmarshaler = (*record)(nil)

// UnmarshalMaxMindDBCursor implements mmdbdata.CursorUnmarshaler.
func (r *record) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	m, err := c.Map()
	if err != nil {
		return mmdbdata.Cursor{}, mmdbdata.NormalizeUnmarshalError[record](err)
	}
	var (
		next                       mmdbdata.Cursor
		asName, name               string
		ccCode, ccMain, ccRegistry string
	)
	for {
		key, vc, ok := m.Next(next)
		if !ok {
			break
		}
		switch string(key) {
		case "autonomous_system_number", "asn":
			next, err = readASN(vc, &r.ASN)
		case "autonomous_system_organization":
			next, err = readString(vc, &r.Org)
		case "as_name":
			next, err = readString(vc, &asName)
		case "name":
			next, err = readString(vc, &name)
		case "country_code":
			next, err = readString(vc, &ccCode)
		case "country":
			next, err = readCountry(vc, &ccMain)
		case "registered_country":
			next, err = readCountry(vc, &ccRegistry)
		default:
			next, err = vc.Skip()
		}
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	if r.Org == "" {
		r.Org = asName
	}
	if r.Org == "" {
		r.Org = name
	}
	switch {
	case ccCode != "":
		r.Country = ccCode
	case ccMain != "":
		r.Country = ccMain
	default:
		r.Country = ccRegistry
	}
	return m.End()
}

// readString reads a string value; values of other kinds are skipped.
func readString(c mmdbdata.Cursor, dst *string) (mmdbdata.Cursor, error) {
	k, err := c.Kind()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	if k != mmdbdata.KindString {
		return c.Skip()
	}
	s, next, err := c.ReadString()
	if err == nil {
		*dst = s
	}
	return next, err
}

// readASN reads an AS number stored as an integer or as "AS15169".
func readASN(c mmdbdata.Cursor, dst *uint32) (mmdbdata.Cursor, error) {
	k, err := c.Kind()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	switch k {
	case mmdbdata.KindUint16, mmdbdata.KindUint32, mmdbdata.KindUint64:
		v, next, err := c.ReadUint()
		if err == nil && v <= 1<<32-1 {
			*dst = uint32(v)
		}
		return next, err
	case mmdbdata.KindString:
		s, next, err := c.ReadString()
		if err == nil {
			s = strings.TrimPrefix(strings.TrimPrefix(s, "AS"), "as")
			if v, perr := strconv.ParseUint(s, 10, 32); perr == nil {
				*dst = uint32(v)
			}
		}
		return next, err
	}
	return c.Skip()
}

// readCountry reads a country given as a map holding iso_code (MaxMind,
// DB-IP) or as a two-letter string (IPinfo); other values are skipped.
func readCountry(c mmdbdata.Cursor, dst *string) (mmdbdata.Cursor, error) {
	k, err := c.Kind()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	switch k {
	case mmdbdata.KindString:
		s, next, err := c.ReadString()
		if err == nil && len(s) == 2 {
			*dst = s
		}
		return next, err
	case mmdbdata.KindMap:
		m, err := c.Map()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		var next mmdbdata.Cursor
		for {
			key, vc, ok := m.Next(next)
			if !ok {
				break
			}
			if string(key) == "iso_code" {
				next, err = readString(vc, dst)
			} else {
				next, err = vc.Skip()
			}
			if err != nil {
				return mmdbdata.Cursor{}, err
			}
		}
		return m.End()
	}
	return c.Skip()
}
