// Package enrich adds facts about the remote (non-subscriber) side of each
// pseudonymized flow: ASN and AS organization, country, threat-intel list
// membership, and exporter and interface names.
package enrich

// Config configures the enrichment stage.
type Config struct {
	// ASNDB is a MaxMind-format ASN database.
	ASNDB string `yaml:"asn_db" doc:"MaxMind-format (MMDB) ASN database; empty for none."`
	// CountryDB is a MaxMind-format country database.
	CountryDB string `yaml:"country_db" doc:"MaxMind-format (MMDB) country database; empty for none."`
	// Intel lists the threat-intel lists.
	Intel []IntelList `yaml:"intel" doc:"Threat-intel address lists."`
}

// IntelList is one threat-intel list.
type IntelList struct {
	// Name is the list's name, shown in candidates.
	Name string `yaml:"name" doc:"List name shown in candidates."`
	// File is the list file.
	File string `yaml:"file" doc:"List file: one address or CIDR per line, or CSV."`
}

// DefaultConfig returns the default enrichment configuration.
func DefaultConfig() Config { return Config{} }

// Validate checks the configuration.
func (c Config) Validate() error { return nil }
