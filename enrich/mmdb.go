package enrich

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	maxminddb "github.com/oschwald/maxminddb-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
)

// mmdbData is one loaded MMDB file with every record it holds decoded
// once, by data offset: the lookup path maps an offset to shared, interned
// values without decoding or allocating, and without locks.
type mmdbData struct {
	r *maxminddb.Reader
	// v4only marks an IPv4-only database, which answers IPv6 lookups
	// with an error instead of "not found".
	v4only bool
	// networks is the number of networks in the search tree.
	networks int
	// as (ASN databases) and cc (country databases) hold the decoded
	// records by data offset.
	as map[uintptr]*asInfo
	cc map[uintptr]*string
}

// asInfo is what an ASN record gives a flow.
type asInfo struct {
	asn      uint32
	org      string
	provider string
}

// loadMMDB opens a MaxMind-format database held in memory and decodes
// every distinct record (as ASN or as country records, by kind); with
// verify it also decodes every record completely, so a corrupt file is
// refused at load instead of failing lookups. Files are read, not
// memory-mapped: operators replace databases in place (cp, curl -o), and a
// mapped file rewritten or truncated under a reader gives wrong answers or
// SIGBUS.
//
// Reader.Verify is not used: it also rejects readable databases over
// metadata (an empty description, as mmdbwriter-built and some third-party
// files have).
func loadMMDB(data []byte, kind sourceKind, verify bool, providers *providerTable) (*mmdbData, error) {
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, fmt.Errorf("not a valid MMDB file: %w", err)
	}
	d := &mmdbData{r: r, v4only: r.Metadata.IPVersion == 4}
	if kind == srcASN {
		d.as = map[uintptr]*asInfo{}
	} else {
		d.cc = map[uintptr]*string{}
	}
	countries := map[string]*string{}
	seen := map[uintptr]bool{}
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return nil, fmt.Errorf("corrupt MMDB file: %w", err)
		}
		d.networks++
		off := res.Offset()
		if seen[off] {
			continue
		}
		seen[off] = true
		if verify {
			var v any
			if err := res.Decode(&v); err != nil {
				return nil, fmt.Errorf("corrupt MMDB file: record of %s: %w", res.Prefix(), err)
			}
		}
		var rec record
		if err := res.Decode(&rec); err != nil {
			return nil, fmt.Errorf("corrupt MMDB file: record of %s: %w", res.Prefix(), err)
		}
		if kind == srcASN {
			d.as[off] = &asInfo{asn: rec.ASN, org: rec.Org, provider: providers.class(rec.ASN, rec.Org)}
			continue
		}
		cc := countries[rec.Country]
		if cc == nil {
			code := rec.Country
			cc = &code
			countries[code] = cc
		}
		d.cc[off] = cc
	}
	return d, nil
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
