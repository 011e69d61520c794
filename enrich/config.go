// Package enrich adds facts about the remote (non-subscriber) side of each
// pseudonymized flow: ASN and AS organization, country, threat-intel list
// membership, a provider class, and exporter and interface names.
//
// The stage reads only flow.Pseudo.Remote (and Exporter, InIf and OutIf for
// names): it runs after the privacy stage and never sees a subscriber
// address. Sources (MMDB files and intel lists) are loaded into an immutable
// snapshot of lookup tables that Reload and the file watcher replace
// atomically, so flows are never dropped or enriched from half-loaded data.
// Per-flow work goes through a bounded per-worker cache and allocates
// nothing; see docs/enrich.md for the design and the measured costs.
package enrich

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ccflow/ccflow/config"
)

// MaxIntelLists is the largest number of intel lists (membership is kept as
// a 64-bit set).
const MaxIntelLists = 64

// MaxCacheSize is the largest per-worker cache size.
const MaxCacheSize = 1 << 24

// Config configures the enrichment stage.
type Config struct {
	// ASNDB is a MaxMind-format ASN database.
	ASNDB string `yaml:"asn_db" doc:"MaxMind-format (MMDB) ASN database (GeoLite2-ASN, DB-IP ASN, IPinfo ASN or Lite); empty for none."`
	// CountryDB is a MaxMind-format country database.
	CountryDB string `yaml:"country_db" doc:"MaxMind-format (MMDB) country database (GeoLite2/GeoIP2 Country or City, DB-IP, IPinfo); empty for none."`
	// Intel lists the threat-intel lists.
	Intel []IntelList `yaml:"intel" doc:"Threat-intel address lists; a flow's intel field names, in this order, every list that contains its remote address."`
	// Providers classifies remote ASes into provider classes; the first
	// matching rule wins.
	Providers []ProviderRule `yaml:"providers" doc:"Provider classes of remote ASes (first matching rule wins); the detector lowers scores of well-known providers."`
	// Exporters names exporters and their interfaces.
	Exporters []Exporter `yaml:"exporters" doc:"Names of exporters (routers) and their interfaces."`
	// CacheSize is the number of remote addresses each worker caches.
	CacheSize int `yaml:"cache_size" doc:"Remote addresses cached per enrichment worker (rounded up to a power of two, 40 bytes each); 0 turns the cache off."`
	// Watch turns on reloading when a source file changes.
	Watch bool `yaml:"watch" doc:"Reload a source when its file changes (the lead process also reloads all sources on SIGHUP)."`
	// ReloadDelay is how long the watcher waits after the last change.
	ReloadDelay time.Duration `yaml:"reload_delay" doc:"Quiet time after the last change to a watched file before it is reloaded."`
	// VerifyMMDB decodes every record of an MMDB file completely when it
	// is loaded.
	VerifyMMDB bool `yaml:"verify_mmdb" doc:"Decode every record of an MMDB file completely when it is loaded, so that a corrupt file is refused (only the fields enrichment reads are decoded otherwise)."`
}

// IntelList is one threat-intel list.
type IntelList struct {
	// Name is the list's name, shown in candidates.
	Name string `yaml:"name" doc:"List name shown in flows and candidates (letters, digits, - _ . only)."`
	// File is the list file.
	File string `yaml:"file" doc:"List file: one address or CIDR per line (# and ; start comments), or CSV when column is set."`
	// Column selects the CSV column holding the address.
	Column string `yaml:"column" doc:"CSV column holding the address: a header name (e.g. dst_ip for abuse.ch Feodo Tracker) or a 1-based number; empty for a plain list."`
}

// ProviderRule gives a provider class to remote ASes.
type ProviderRule struct {
	// Class is the provider class (for example "cdn", "cloud", "push").
	Class string `yaml:"class" doc:"Provider class (for example cdn, cloud, push)."`
	// ASNs are AS numbers of the class.
	ASNs []uint32 `yaml:"asns" doc:"AS numbers of this class."`
	// OrgContains are case-insensitive substrings of the AS organization.
	OrgContains []string `yaml:"org_contains" doc:"Case-insensitive substrings of the AS organization that select this class."`
}

// Exporter names one exporter and its interfaces.
type Exporter struct {
	// Addr is the exporter's address as the collector sees it.
	Addr string `yaml:"addr" doc:"Exporter (router) address as seen by the collector."`
	// Name is the exporter's name.
	Name string `yaml:"name" doc:"Exporter name."`
	// Interfaces names interfaces by SNMP index.
	Interfaces []Interface `yaml:"interfaces" doc:"Interface names by SNMP index."`
}

// Interface names one interface of an exporter.
type Interface struct {
	// Index is the SNMP interface index.
	Index uint32 `yaml:"index" doc:"SNMP interface index."`
	// Name is the interface name.
	Name string `yaml:"name" doc:"Interface name."`
}

// DefaultConfig returns the default enrichment configuration: no databases,
// no intel lists, a 64k-entry cache per worker, file watching on, and a
// starting set of provider classes for large CDN, cloud and push-platform
// ASes (by AS number only; adjust to your network).
func DefaultConfig() Config {
	return Config{
		Providers: []ProviderRule{
			// Cloudflare, Akamai (2), Fastly, Edgio/Edgecast, Netflix Open Connect.
			{Class: "cdn", ASNs: []uint32{13335, 20940, 16625, 54113, 15133, 2906}},
			// Amazon (2), Google Cloud, Microsoft.
			{Class: "cloud", ASNs: []uint32{16509, 14618, 396982, 8075}},
			// Apple (APNs), Google (FCM), Meta: apps beacon to these by design.
			{Class: "push", ASNs: []uint32{714, 6185, 15169, 32934}},
		},
		CacheSize:   1 << 16,
		Watch:       true,
		ReloadDelay: time.Second,
		VerifyMMDB:  true,
	}
}

// Validate checks the configuration. It does not open files: New does, and
// names the key and file of a missing or corrupt source.
func (c Config) Validate() error {
	var errs []error
	if c.CacheSize < 0 || c.CacheSize > MaxCacheSize {
		errs = append(errs, config.Errorf("cache_size", "must be between 0 and %d, got %d", MaxCacheSize, c.CacheSize))
	}
	if c.ReloadDelay < 0 {
		errs = append(errs, config.Errorf("reload_delay", "must not be negative"))
	}
	if len(c.Intel) > MaxIntelLists {
		errs = append(errs, config.Errorf("intel", "at most %d lists, got %d", MaxIntelLists, len(c.Intel)))
	}
	names := map[string]int{}
	for i, l := range c.Intel {
		key := fmt.Sprintf("intel[%d]", i)
		if err := ValidateListName(l.Name); err != nil {
			errs = append(errs, config.Errorf(key+".name", "%v", err))
		} else if j, dup := names[l.Name]; dup {
			errs = append(errs, config.Errorf(key+".name", "%q is also the name of intel[%d]", l.Name, j))
		} else {
			names[l.Name] = i
		}
		if strings.TrimSpace(l.File) == "" {
			errs = append(errs, config.Errorf(key+".file", "must name a file"))
		}
		if l.Column != "" {
			if n, err := strconv.Atoi(l.Column); err == nil && n < 1 {
				errs = append(errs, config.Errorf(key+".column", "column numbers start at 1, got %d", n))
			}
		}
	}
	for i, p := range c.Providers {
		key := fmt.Sprintf("providers[%d]", i)
		if p.Class == "" || strings.ContainsAny(p.Class, ", \t\n") {
			errs = append(errs, config.Errorf(key+".class", "must be a non-empty word, got %q", p.Class))
		}
		if len(p.ASNs) == 0 && len(p.OrgContains) == 0 {
			errs = append(errs, config.Errorf(key, "needs asns or org_contains"))
		}
		for j, o := range p.OrgContains {
			if strings.TrimSpace(o) == "" {
				errs = append(errs, config.Errorf(fmt.Sprintf("%s.org_contains[%d]", key, j), "must not be empty"))
			}
		}
	}
	exporters := map[netip.Addr]int{}
	for i, x := range c.Exporters {
		key := fmt.Sprintf("exporters[%d]", i)
		a, err := netip.ParseAddr(x.Addr)
		switch {
		case err != nil:
			errs = append(errs, config.Errorf(key+".addr", "%q is not an IP address", x.Addr))
		case a.Zone() != "":
			errs = append(errs, config.Errorf(key+".addr", "%q: zones are not allowed", x.Addr))
		default:
			a = a.Unmap()
			if j, dup := exporters[a]; dup {
				errs = append(errs, config.Errorf(key+".addr", "%s is also the address of exporters[%d]", a, j))
			}
			exporters[a] = i
		}
		ifs := map[uint32]int{}
		for j, f := range x.Interfaces {
			ikey := fmt.Sprintf("%s.interfaces[%d]", key, j)
			if f.Name == "" {
				errs = append(errs, config.Errorf(ikey+".name", "must not be empty"))
			}
			if k, dup := ifs[f.Index]; dup {
				errs = append(errs, config.Errorf(ikey+".index", "index %d is also interfaces[%d]", f.Index, k))
			}
			ifs[f.Index] = j
		}
		if x.Name == "" && len(x.Interfaces) == 0 {
			errs = append(errs, config.Errorf(key, "needs a name or interfaces"))
		}
	}
	return errors.Join(errs...)
}

// ValidateListName checks an intel list name: non-empty, at most 64
// characters, letters, digits, '-', '_' and '.' only (names are joined with
// commas in flow.Pseudo.Intel).
func ValidateListName(name string) error {
	if name == "" {
		return errors.New("list name must not be empty")
	}
	if len(name) > 64 {
		return fmt.Errorf("list name %q is longer than 64 characters", name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("list name %q may hold only letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}
