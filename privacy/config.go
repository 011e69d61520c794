package privacy

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ccflow/ccflow/config"
)

// Pseudonym modes (the values of Config.Pseudonym and of a key directory's
// "pseudonym" field).
const (
	// ModeAES128 encrypts the 16-byte address with AES-128: a keyed
	// permutation, collision-free, reversible only with the key. The default.
	ModeAES128 = "aes-128"
	// ModeAES256 is ModeAES128 with a 256-bit key (about 40% slower).
	ModeAES256 = "aes-256"
	// ModeCryptoPAn is prefix-preserving Crypto-PAn (Xu et al.) with AES-128:
	// two addresses sharing a k-bit prefix get pseudonyms sharing a k-bit
	// prefix. Weaker than the AES modes (it leaks subnet structure, and one
	// known address/pseudonym pair reveals the pseudonyms of its whole
	// prefix tree); for researchers who need subnet structure. Off by
	// default.
	ModeCryptoPAn = "cryptopan"
)

// Policies of Config.Transit, Config.SubscriberPorts and Config.Interfaces.
const (
	PolicyKeep    = "keep"
	PolicyDrop    = "drop"
	PolicyCoarsen = "coarsen"
)

// Config configures the privacy stage. Every field is documented in
// docs/config.md (generated) and explained in docs/privacy.md.
type Config struct {
	// Subscribers lists the ISP's subscriber prefixes (CIDRs).
	Subscribers []string `yaml:"subscribers" doc:"Subscriber prefixes (IPv4 and IPv6 CIDRs); a bare address is a host prefix. Flag --subscribers."`
	// SubscribersFile names a file of subscriber prefixes, one per line.
	SubscribersFile string `yaml:"subscribers_file" doc:"File of subscriber prefixes, one CIDR per line (# comments allowed); added to subscribers."`
	// KeysDir is the directory of epoch keys; empty means the default key
	// directory (see DefaultKeysDir), announced with a warning.
	KeysDir string `yaml:"keys_dir" doc:"Directory holding the epoch keys (mode 0700, key files 0600); empty uses a default directory, logged at start. Flag --keys."`
	// CreateKeys lets the stage create a missing epoch key on first use.
	CreateKeys bool `yaml:"create_keys" doc:"Create a missing epoch key on first use (needs keys_dir writable); turn off on collectors that receive keys from a key host."`
	// EpochLength is the length of a key epoch for a new key directory. An
	// existing key directory keeps the length it was created with, and a
	// different value here is an error.
	EpochLength time.Duration `yaml:"epoch_length" doc:"Length of a key epoch (pseudonyms of different epochs do not link); must match an existing key directory."`
	// Pseudonym is the pseudonym mode for a new key directory; like
	// EpochLength it must match an existing one.
	Pseudonym string `yaml:"pseudonym" doc:"Pseudonym function: AES encryption of the 16-byte address, or prefix-preserving Crypto-PAn (weaker, see docs/privacy.md); must match an existing key directory." enum:"aes-128|aes-256|cryptopan"`
	// Transit is the policy for flows with no subscriber side.
	Transit string `yaml:"transit" doc:"Flows with no subscriber side: drop them, or keep them as transit flows with both addresses in the clear." enum:"drop|keep"`
	// SubscriberPorts is the policy for the subscriber side's port.
	SubscriberPorts string `yaml:"subscriber_ports" doc:"Subscriber-side ports: coarsen keeps service ports (up to service_port_max) and zeroes ephemeral ones, which with CGNAT port blocks can single out a subscriber." enum:"coarsen|keep|drop"`
	// ServicePortMax is the highest subscriber port kept by "coarsen".
	ServicePortMax uint16 `yaml:"service_port_max" doc:"Highest subscriber port that subscriber_ports: coarsen keeps."`
	// Interfaces is the policy for interface indexes.
	Interfaces string `yaml:"interfaces" doc:"Interface indexes: keep, drop, or coarsen (keep indexes up to interface_max, zero the rest, e.g. per-subscriber virtual interfaces on a BNG)." enum:"keep|coarsen|drop"`
	// InterfaceMax is the highest interface index kept by "coarsen".
	InterfaceMax uint32 `yaml:"interface_max" doc:"Highest interface index that interfaces: coarsen keeps."`
	// AuditLog is the reveal audit log; empty means audit.log in KeysDir.
	AuditLog string `yaml:"audit_log" doc:"Append-only, hash-chained audit log of reveals; empty means audit.log inside keys_dir. Flag --audit-log."`
	// ReloadInterval is how often a started stage re-reads the key
	// directory (new keys, destroyed epochs) and creates the next epoch's key.
	ReloadInterval time.Duration `yaml:"reload_interval" doc:"How often the running stage re-reads the key directory (keys added, epochs destroyed) and creates the next epoch's key ahead of time."`
}

// DefaultConfig returns the default privacy configuration: AES-128
// pseudonyms, 7-day epochs, keys created on first use, transit flows
// dropped, ephemeral subscriber ports zeroed, interface indexes kept.
func DefaultConfig() Config {
	return Config{
		CreateKeys:      true,
		EpochLength:     7 * 24 * time.Hour,
		Pseudonym:       ModeAES128,
		Transit:         PolicyDrop,
		SubscriberPorts: PolicyCoarsen,
		ServicePortMax:  1023,
		Interfaces:      PolicyKeep,
		InterfaceMax:    0,
		ReloadInterval:  time.Minute,
	}
}

// MinEpochLength and MaxEpochLength bound Config.EpochLength.
const (
	MinEpochLength = time.Hour
	MaxEpochLength = 366 * 24 * time.Hour
)

// Validate checks the configuration without touching files and returns every
// problem found as a *config.FieldError. Whether any subscriber prefix is
// configured at all is checked by New: the default configuration has none.
func (c Config) Validate() error {
	var errs []error
	for i, s := range c.Subscribers {
		if _, err := parsePrefix(s); err != nil {
			errs = append(errs, config.Errorf(fmt.Sprintf("subscribers[%d]", i), "%v", err))
		}
	}
	if c.EpochLength < MinEpochLength || c.EpochLength > MaxEpochLength {
		errs = append(errs, config.Errorf("epoch_length", "%v is outside %v..%v", c.EpochLength, MinEpochLength, MaxEpochLength))
	}
	if c.EpochLength%time.Second != 0 {
		errs = append(errs, config.Errorf("epoch_length", "%v is not a whole number of seconds", c.EpochLength))
	}
	if c.Interfaces == PolicyCoarsen && c.InterfaceMax == 0 {
		errs = append(errs, config.Errorf("interface_max", "must be set (> 0) when interfaces is coarsen"))
	}
	if c.ReloadInterval < time.Second {
		errs = append(errs, config.Errorf("reload_interval", "%v is shorter than 1s", c.ReloadInterval))
	}
	return errors.Join(errs...)
}

// parsePrefix parses one subscriber prefix: a CIDR, or a bare address as a
// host prefix. Host bits are cleared; IPv4-mapped IPv6 prefixes become IPv4.
// The error never quotes the input (it may be a subscriber address).
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, errors.New("not a CIDR prefix or address")
		}
		if a.Zone() != "" {
			return netip.Prefix{}, errors.New("zoned addresses are not prefixes")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errors.New("IPv4-mapped prefix shorter than /96")
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
