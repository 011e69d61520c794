package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/enrich"
)

// addEnrichFlags adds the enrichment source flags of run, detect and
// replay to fs (the command's Flags()): --asn-db FILE and --country-db
// FILE, bound to enrich.asn_db and enrich.country_db, and the repeatable
// --intel NAME=FILE, which loadConfig cannot apply (a list item is not one
// key): call applyEnrichFlags on the configuration loadConfig returns.
func addEnrichFlags(fs *pflag.FlagSet) {
	bindFlag(fs, "asn-db", "enrich.asn_db", "MaxMind-format (MMDB) ASN database `FILE`")
	bindFlag(fs, "country-db", "enrich.country_db", "MaxMind-format (MMDB) country database `FILE`")
	fs.StringArray("intel", nil, "threat-intel list as `NAME=FILE` (one address or CIDR per line) or NAME:COLUMN=FILE "+
		"(CSV, address in COLUMN: header name or 1-based number); repeatable; a NAME already in enrich.intel gets the new "+
		"file (config enrich.intel)")
}

// applyEnrichFlags applies --intel to cfg, after loadConfig. Each value
// NAME=FILE (or NAME:COLUMN=FILE) replaces the file (and column) of the
// configured list NAME, or adds the list after the configured ones. It
// returns an error naming the flag for a malformed value, a name given
// twice, or a configuration that no longer validates.
func applyEnrichFlags(fs *pflag.FlagSet, cfg *Config) error {
	f := fs.Lookup("intel")
	if f == nil || !f.Changed {
		return nil
	}
	vals, err := fs.GetStringArray("intel")
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var errs []error
	for _, v := range vals {
		l, err := parseIntelFlag(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("flag --intel %q: %w", v, err))
			continue
		}
		if seen[l.Name] {
			errs = append(errs, fmt.Errorf("flag --intel %q: list %q is given twice", v, l.Name))
			continue
		}
		seen[l.Name] = true
		found := false
		for i := range cfg.Enrich.Intel {
			if c := &cfg.Enrich.Intel[i]; c.Name == l.Name {
				c.File = l.File
				if l.Column != "" {
					c.Column = l.Column
				}
				found = true
			}
		}
		if !found {
			cfg.Enrich.Intel = append(cfg.Enrich.Intel, l)
		}
	}
	if len(errs) == 0 {
		if err := config.Prefix("enrich", cfg.Enrich.Validate()); err != nil {
			errs = append(errs, fmt.Errorf("flag --intel: %w", err))
		}
	}
	return errors.Join(errs...)
}

// parseIntelFlag parses NAME=FILE or NAME:COLUMN=FILE.
func parseIntelFlag(v string) (enrich.IntelList, error) {
	var l enrich.IntelList
	head, file, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(file) == "" {
		return l, errors.New("want NAME=FILE or NAME:COLUMN=FILE")
	}
	name, column, hasColumn := strings.Cut(head, ":")
	if err := enrich.ValidateListName(name); err != nil {
		return l, err
	}
	if hasColumn && column == "" {
		return l, errors.New("empty COLUMN in NAME:COLUMN=FILE")
	}
	return enrich.IntelList{Name: name, File: file, Column: column}, nil
}
