package enrich

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/ccflow/ccflow/flow"
)

// testConfig is a configuration with no defaults that would change what a
// test checks (no provider rules, no watcher) and a small cache.
func testConfig() Config {
	c := DefaultConfig()
	c.Providers = nil
	c.Watch = false
	c.CacheSize = 1024
	c.ReloadDelay = 20 * time.Millisecond
	return c
}

func mustNew(t testing.TB, cfg Config, deps Deps) *Enricher {
	t.Helper()
	e, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	return e
}

// writeFile writes data to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// replaceFile replaces path atomically (write to a temporary file, rename),
// the way list downloaders do.
func replaceFile(t testing.TB, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// mmdbNet is one network of a database built by writeMMDB.
type mmdbNet struct {
	cidr string
	rec  mmdbtype.Map
}

// writeMMDB builds an MMDB file with mmdbwriter.
func writeMMDB(t testing.TB, path string, opts mmdbwriter.Options, nets []mmdbNet) string {
	t.Helper()
	if opts.DatabaseType == "" {
		opts.DatabaseType = "ccflow-test"
	}
	if opts.RecordSize == 0 {
		opts.RecordSize = 28
	}
	opts.IncludeReservedNetworks = true
	tree, err := mmdbwriter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		_, ipnet, err := net.ParseCIDR(n.cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(ipnet, n.rec); err != nil {
			t.Fatalf("insert %s: %v", n.cidr, err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// asnRec is a GeoLite2/DB-IP style ASN record.
func asnRec(asn uint32, org string) mmdbtype.Map {
	m := mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(asn)}
	if org != "" {
		m["autonomous_system_organization"] = mmdbtype.String(org)
	}
	return m
}

// addr parses an address into the flow form (IPv4-mapped for IPv4).
func addr(s string) flow.Addr { return flow.AddrFrom(netip.MustParseAddr(s)) }

// enrichOne enriches one flow with the given remote address.
func enrichOne(e *Enricher, remote flow.Addr) flow.Pseudo {
	fs := []flow.Pseudo{{Remote: remote, RemotePort: 443, Bytes: 1234}}
	e.Enrich(fs)
	return fs[0]
}

// remoteFields is the enrichment of the remote side, for comparisons.
type remoteFields struct {
	ASN      uint32
	Org      string
	Country  string
	Provider string
	Intel    string
}

func fieldsOf(p flow.Pseudo) remoteFields {
	return remoteFields{p.RemoteASN, p.RemoteASOrg, p.RemoteCountry, p.Provider, p.Intel}
}
