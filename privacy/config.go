// Package privacy classifies the subscriber side of each flow, replaces
// subscriber addresses with keyed pseudonyms, minimizes other identifying
// fields, and provides the audited reveal of a pseudonym.
package privacy

// Config configures the privacy stage.
type Config struct {
	// Subscribers lists the ISP's subscriber prefixes (CIDRs).
	Subscribers []string `yaml:"subscribers" doc:"Subscriber prefixes (IPv4 and IPv6 CIDRs)."`
	// SubscribersFile names a file of subscriber prefixes, one per line.
	SubscribersFile string `yaml:"subscribers_file" doc:"File of subscriber prefixes, one CIDR per line (# comments allowed)."`
	// KeysDir is the directory of epoch keys.
	KeysDir string `yaml:"keys_dir" doc:"Directory holding the epoch keys (mode 0700, key files 0600)."`
}

// DefaultConfig returns the default privacy configuration.
func DefaultConfig() Config { return Config{} }

// Validate checks the configuration.
func (c Config) Validate() error { return nil }
