package enrich

import (
	"encoding/json"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gaissmai/bart"
	"github.com/google/go-cmp/cmp"
	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	maxminddb "github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/testenv"
)

// sourceNet is one network of the JSON files the MaxMind test databases
// were built from, with the answer enrichment must give for it.
type sourceNet struct {
	prefix  netip.Prefix
	asn     uint32
	org     string
	country string
}

// loadSourceJSON parses a MaxMind test-data JSON file: a list of
// {"CIDR": record} objects. The expected country is country.iso_code, or
// registered_country.iso_code when the record has no country.
func loadSourceJSON(t *testing.T, name string) []sourceNet {
	t.Helper()
	data, err := os.ReadFile(testenv.Data(t, "mmdb", name))
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]struct {
		ASN     uint32 `json:"autonomous_system_number"`
		Org     string `json:"autonomous_system_organization"`
		Country *struct {
			ISOCode string `json:"iso_code"`
		}
		RegisteredCountry *struct {
			ISOCode string `json:"iso_code"`
		} `json:"registered_country"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var out []sourceNet
	for _, m := range raw {
		for cidr, r := range m {
			p := netip.MustParsePrefix(cidr)
			n := sourceNet{prefix: p, asn: r.ASN, org: r.Org}
			switch {
			case r.Country != nil:
				n.country = r.Country.ISOCode
			case r.RegisteredCountry != nil:
				n.country = r.RegisteredCountry.ISOCode
			}
			out = append(out, n)
		}
	}
	return out
}

// probes returns the first, last and a middle address of p, and the
// addresses just outside it.
func probes(p netip.Prefix) []netip.Addr {
	p = p.Masked()
	first := p.Addr()
	b := first.AsSlice()
	n := new(big.Int).SetBytes(b)
	host := len(b)*8 - p.Bits()
	size := new(big.Int).Lsh(big.NewInt(1), uint(host))
	last := new(big.Int).Add(n, new(big.Int).Sub(size, big.NewInt(1)))
	mid := new(big.Int).Add(n, new(big.Int).Rsh(size, 1))
	toAddr := func(v *big.Int) netip.Addr {
		buf := make([]byte, len(b))
		v.FillBytes(buf)
		a, _ := netip.AddrFromSlice(buf)
		return a
	}
	out := []netip.Addr{first, toAddr(mid), toAddr(last)}
	if prev := first.Prev(); prev.IsValid() {
		out = append(out, prev)
	}
	if next := toAddr(last).Next(); next.IsValid() {
		out = append(out, next)
	}
	return out
}

func find(nets []sourceNet, a netip.Addr) (sourceNet, bool) {
	for _, n := range nets {
		if n.prefix.Contains(a) {
			return n, true
		}
	}
	return sourceNet{}, false
}

// TestMaxMindTestDatabases looks up the first, middle and last address of
// every network in the JSON sources of GeoLite2-ASN-Test and
// GeoLite2-Country-Test (IPv4 and IPv6), and the addresses just outside
// it, through Enrich and so as IPv4-mapped flow addresses, and compares
// with the JSON.
func TestMaxMindTestDatabases(t *testing.T) {
	asnNets := loadSourceJSON(t, "GeoLite2-ASN-Test.json")
	ccNets := loadSourceJSON(t, "GeoLite2-Country-Test.json")
	cfg := testConfig()
	cfg.ASNDB = testenv.Data(t, "mmdb", "GeoLite2-ASN-Test.mmdb")
	cfg.CountryDB = testenv.Data(t, "mmdb", "GeoLite2-Country-Test.mmdb")
	reg := prometheus.NewPedanticRegistry()
	e := mustNew(t, cfg, Deps{Registerer: reg})

	var addrs []netip.Addr
	for _, n := range append(append([]sourceNet(nil), asnNets...), ccNets...) {
		addrs = append(addrs, probes(n.prefix)...)
	}
	// Addresses in neither file.
	addrs = append(addrs, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))

	var v4, v6, withASN, withOrg, withCountry int
	for _, a := range addrs {
		var want remoteFields
		if n, ok := find(asnNets, a); ok {
			want.ASN, want.Org = n.asn, n.org
		}
		if n, ok := find(ccNets, a); ok {
			want.Country = n.country
		}
		// The same address in every form a flow can carry it: from a
		// netip IPv4 address, from 16 IPv4-mapped bytes, from an IPv6
		// netip address holding the mapped form.
		forms := []flow.Addr{flow.AddrFrom(a)}
		if a.Is4() {
			v4++
			b := a.As16()
			forms = append(forms, flow.AddrFromSlice(b[:]), flow.AddrFrom(netip.AddrFrom16(a.As16())))
		} else {
			v6++
		}
		for _, fa := range forms {
			got := fieldsOf(enrichOne(e, fa))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s (flow form %x): (-want +got)\n%s", a, fa[:], diff)
			}
		}
		if want.ASN != 0 {
			withASN++
		}
		if want.Org != "" {
			withOrg++
		}
		if want.Country != "" {
			withCountry++
		}
	}
	t.Logf("checked %d addresses (%d IPv4 in 3 forms, %d IPv6): %d with an ASN, %d with an org, %d with a country",
		len(addrs), v4, v6, withASN, withOrg, withCountry)
	if v4 < 500 || v6 < 500 || withASN < 1000 || withCountry < 500 || withOrg < 1000 {
		t.Errorf("too few probes: the JSON files were not fully used")
	}
}

// TestRecordDirect checks the record decoder against the readers
// themselves for every network the databases hold, IPv4 addresses given
// both as IPv4 and as IPv4-mapped IPv6.
func TestRecordDirect(t *testing.T) {
	for _, name := range []string{"GeoLite2-ASN-Test", "GeoLite2-Country-Test"} {
		t.Run(name, func(t *testing.T) {
			nets := loadSourceJSON(t, name+".json")
			data, err := os.ReadFile(testenv.Data(t, "mmdb", name+".mmdb"))
			if err != nil {
				t.Fatal(err)
			}
			r, err := maxminddb.OpenBytes(data)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for res := range r.Networks() {
				var got record
				if err := res.Decode(&got); err != nil {
					t.Fatalf("%s: %v", res.Prefix(), err)
				}
				a := res.Prefix().Addr()
				want, ok := find(nets, a.Unmap())
				if !ok {
					t.Errorf("%s is in the database but not in the JSON", res.Prefix())
					continue
				}
				if diff := cmp.Diff(record{ASN: want.asn, Org: want.org, Country: want.country}, got); diff != "" {
					t.Errorf("%s: (-want +got)\n%s", res.Prefix(), diff)
				}
				n++
			}
			if n < 200 {
				t.Errorf("only %d networks", n)
			}
		})
	}
}

func TestBrokenDatabase(t *testing.T) {
	broken := testenv.Data(t, "mmdb", "GeoIP2-City-Test-Broken-Double-Format.mmdb")
	dir := t.TempDir()
	garbage := writeFile(t, dir, "garbage.mmdb", strings.Repeat("not an mmdb file\n", 100))
	empty := writeFile(t, dir, "empty.mmdb", "")
	tests := []struct {
		name string
		set  func(*Config)
		want []string
	}{
		{"broken country", func(c *Config) { c.CountryDB = broken }, []string{"enrich.country_db", broken, "corrupt MMDB file", "float 64 size"}},
		{"broken asn", func(c *Config) { c.ASNDB = broken }, []string{"enrich.asn_db", broken, "corrupt MMDB file"}},
		{"garbage", func(c *Config) { c.ASNDB = garbage }, []string{"enrich.asn_db", garbage, "not a valid MMDB file"}},
		{"empty", func(c *Config) { c.CountryDB = empty }, []string{"enrich.country_db", empty, "file is empty"}},
		{"missing", func(c *Config) { c.ASNDB = filepath.Join(dir, "nope.mmdb") }, []string{"enrich.asn_db", filepath.Join(dir, "nope.mmdb"), "no such file"}},
		{"directory", func(c *Config) { c.ASNDB = dir }, []string{"enrich.asn_db", dir, "is a directory"}},
		{"missing intel", func(c *Config) { c.Intel = []IntelList{{Name: "feodo", File: filepath.Join(dir, "feodo.csv")}} },
			[]string{"enrich.intel[0] (feodo)", filepath.Join(dir, "feodo.csv"), "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.set(&cfg)
			_, err := New(cfg, Deps{})
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestBrokenDatabaseUnverified: with verification off the broken database
// loads (its bad floats are in fields enrichment does not read) and gives
// the countries it holds.
func TestBrokenDatabaseUnverified(t *testing.T) {
	cfg := testConfig()
	cfg.VerifyMMDB = false
	cfg.CountryDB = testenv.Data(t, "mmdb", "GeoIP2-City-Test-Broken-Double-Format.mmdb")
	e := mustNew(t, cfg, Deps{})
	for a, want := range map[string]string{"2.125.160.216": "GB", "67.43.156.1": "BT", "2001:218::1": "JP", "::1": ""} {
		if got := enrichOne(e, addr(a)).RemoteCountry; got != want {
			t.Errorf("%s: country %q, want %q", a, got, want)
		}
	}
}

// TestOtherLayouts builds databases in the layouts of DB-IP and IPinfo
// with mmdbwriter, including an IPv4-only one and one without IPv4
// aliasing, and checks what enrichment takes from them.
func TestOtherLayouts(t *testing.T) {
	dir := t.TempDir()
	names := mmdbtype.Map{"en": mmdbtype.String("Germany")}
	dbipCountry := writeMMDB(t, filepath.Join(dir, "dbip-country-lite.mmdb"), mmdbwriter.Options{DatabaseType: "DBIP-Country-Lite"}, []mmdbNet{
		{"5.0.0.0/16", mmdbtype.Map{
			"continent": mmdbtype.Map{"code": mmdbtype.String("EU"), "geoname_id": mmdbtype.Uint32(6255148)},
			"country":   mmdbtype.Map{"geoname_id": mmdbtype.Uint32(2921044), "is_in_european_union": mmdbtype.Bool(true), "iso_code": mmdbtype.String("DE"), "names": names},
		}},
		{"2a01:4f8::/32", mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE")}}},
	})
	dbipASN := writeMMDB(t, filepath.Join(dir, "dbip-asn-lite.mmdb"), mmdbwriter.Options{DatabaseType: "DBIP-ASN-Lite (compat=GeoLite2-ASN)"}, []mmdbNet{
		{"5.0.0.0/16", asnRec(24940, "Hetzner Online GmbH")},
		{"2a01:4f8::/32", asnRec(24940, "Hetzner Online GmbH")},
	})
	ipinfoLite := writeMMDB(t, filepath.Join(dir, "ipinfo_lite.mmdb"), mmdbwriter.Options{DatabaseType: "ipinfo ipinfo_lite.mmdb", DisableIPv4Aliasing: true}, []mmdbNet{
		{"1.1.1.0/24", mmdbtype.Map{
			"asn": mmdbtype.String("AS13335"), "as_name": mmdbtype.String("Cloudflare, Inc."), "as_domain": mmdbtype.String("cloudflare.com"),
			"country_code": mmdbtype.String("AU"), "country": mmdbtype.String("Australia"),
			"continent_code": mmdbtype.String("OC"), "continent": mmdbtype.String("Oceania"),
		}},
		{"2606:4700::/32", mmdbtype.Map{"asn": mmdbtype.String("AS13335"), "as_name": mmdbtype.String("Cloudflare, Inc."), "country_code": mmdbtype.String("US"), "country": mmdbtype.String("United States")}},
	})
	ipinfoASN := writeMMDB(t, filepath.Join(dir, "ipinfo-asn.mmdb"), mmdbwriter.Options{DatabaseType: "ipinfo asn.mmdb"}, []mmdbNet{
		{"8.8.8.0/24", mmdbtype.Map{"asn": mmdbtype.String("AS15169"), "name": mmdbtype.String("Google LLC"), "domain": mmdbtype.String("google.com"), "route": mmdbtype.String("8.8.8.0/24"), "type": mmdbtype.String("hosting")}},
	})
	ipinfoCountry := writeMMDB(t, filepath.Join(dir, "ipinfo-country.mmdb"), mmdbwriter.Options{DatabaseType: "ipinfo country.mmdb"}, []mmdbNet{
		{"8.8.8.0/24", mmdbtype.Map{"country": mmdbtype.String("US"), "country_name": mmdbtype.String("United States"), "continent": mmdbtype.String("NA")}},
	})
	v4only := writeMMDB(t, filepath.Join(dir, "v4only.mmdb"), mmdbwriter.Options{IPVersion: 4, RecordSize: 24}, []mmdbNet{
		{"9.9.9.0/24", asnRec(19281, "Quad9")},
	})

	tests := []struct {
		name    string
		asn, cc string
		addr    string
		want    remoteFields
	}{
		{"dbip v4", dbipASN, dbipCountry, "5.0.1.2", remoteFields{ASN: 24940, Org: "Hetzner Online GmbH", Country: "DE"}},
		{"dbip v6", dbipASN, dbipCountry, "2a01:4f8:1:2::3", remoteFields{ASN: 24940, Org: "Hetzner Online GmbH", Country: "DE"}},
		{"dbip miss", dbipASN, dbipCountry, "6.0.0.1", remoteFields{}},
		{"ipinfo lite as both, v4 without aliasing", ipinfoLite, ipinfoLite, "1.1.1.1", remoteFields{ASN: 13335, Org: "Cloudflare, Inc.", Country: "AU"}},
		{"ipinfo lite v6", ipinfoLite, ipinfoLite, "2606:4700::1111", remoteFields{ASN: 13335, Org: "Cloudflare, Inc.", Country: "US"}},
		{"ipinfo asn + country", ipinfoASN, ipinfoCountry, "8.8.8.8", remoteFields{ASN: 15169, Org: "Google LLC", Country: "US"}},
		{"ipv4-only db, v4", v4only, "", "9.9.9.9", remoteFields{ASN: 19281, Org: "Quad9"}},
		{"ipv4-only db, v6 is no error", v4only, "", "2620:fe::fe", remoteFields{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.ASNDB, cfg.CountryDB = tt.asn, tt.cc
			e := mustNew(t, cfg, Deps{})
			if diff := cmp.Diff(tt.want, fieldsOf(enrichOne(e, addr(tt.addr)))); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestMerger(t *testing.T) {
	a, b := &asInfo{asn: 1}, &asInfo{asn: 2}
	tests := []struct {
		name string
		in   []string
		vals []*asInfo
		want []string
	}{
		{"adjacent same", []string{"10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24"}, []*asInfo{a, a, a}, []string{"10.0.0.0/23"}},
		{"adjacent different", []string{"10.0.0.0/25", "10.0.0.128/25"}, []*asInfo{a, b}, []string{"10.0.0.0/25", "10.0.0.128/25"}},
		{"gap", []string{"10.0.0.0/24", "10.0.2.0/24"}, []*asInfo{a, a}, []string{"10.0.0.0/24", "10.0.2.0/24"}},
		{"unaligned run", []string{"10.0.1.0/24", "10.0.2.0/24"}, []*asInfo{a, a}, []string{"10.0.1.0/24", "10.0.2.0/24"}},
		{"families", []string{"255.255.255.0/24", "::/96"}, []*asInfo{a, a}, []string{"255.255.255.0/24", "::/96"}},
		{"v6", []string{"2001:db8::/33", "2001:db8:8000::/33"}, []*asInfo{b, b}, []string{"2001:db8::/32"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := merger[*asInfo]{t: &bart.Table[*asInfo]{}}
			n := 0
			for i, p := range tt.in {
				n += m.add(netip.MustParsePrefix(p), tt.vals[i])
			}
			n += m.flush()
			var got []string
			for p := range m.t.AllSorted() {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			if n != len(tt.want) {
				t.Errorf("counted %d prefixes, want %d", n, len(tt.want))
			}
			for i, p := range tt.in {
				if v, _ := m.t.Lookup(netip.MustParsePrefix(p).Addr()); v != tt.vals[i] {
					t.Errorf("%s: wrong value", p)
				}
			}
		})
	}
}
