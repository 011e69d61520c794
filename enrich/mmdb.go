package enrich

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	maxminddb "github.com/oschwald/maxminddb-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
)

// openMMDBBytes opens a MaxMind-format database held in memory and, with
// verify, checks all of it. Files are read, not memory-mapped: operators
// replace databases in place (cp, curl -o), and a mapped file that is
// rewritten or truncated under a reader gives wrong answers or SIGBUS.
func openMMDBBytes(data []byte, verify bool) (*maxminddb.Reader, error) {
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, fmt.Errorf("not a valid MMDB file: %w", err)
	}
	if verify {
		if err := verifyMMDB(r); err != nil {
			return nil, fmt.Errorf("corrupt MMDB file: %w", err)
		}
	}
	return r, nil
}

// verifyMMDB walks the whole search tree and decodes every distinct data
// record completely. It is used instead of Reader.Verify, which also
// rejects readable databases over metadata (for example an empty
// description, as third-party and mmdbwriter-built files have).
func verifyMMDB(r *maxminddb.Reader) error {
	seen := map[uintptr]struct{}{}
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return err
		}
		off := res.Offset()
		if _, ok := seen[off]; ok {
			continue
		}
		seen[off] = struct{}{}
		var v any
		if err := res.Decode(&v); err != nil {
			return fmt.Errorf("record of %s: %w", res.Prefix(), err)
		}
		var rec record
		if err := res.Decode(&rec); err != nil {
			return fmt.Errorf("record of %s: %w", res.Prefix(), err)
		}
	}
	return nil
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
