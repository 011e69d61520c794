package collector

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/ccflow/ccflow/collector/netflow"
	"github.com/ccflow/ccflow/config"
)

// Config configures the collector stage.
type Config struct {
	// NetFlow is the NetFlow v5/v9 listener.
	NetFlow ListenerConfig `yaml:"netflow" doc:"NetFlow v5/v9 listener."`
	// IPFIX is the IPFIX listener.
	IPFIX ListenerConfig `yaml:"ipfix" doc:"IPFIX listener."`
	// SFlow is the sFlow v5 listener.
	SFlow ListenerConfig `yaml:"sflow" doc:"sFlow v5 listener."`
	// Exporters is the exporter allowlist.
	Exporters []string `yaml:"exporters" doc:"Exporter allowlist: CIDRs whose datagrams are decoded; datagrams from other sources are counted and dropped. Empty accepts every source."`
	// MaxExporters bounds the per-exporter state.
	MaxExporters int `yaml:"max_exporters" doc:"Most exporters (source addresses) with their own templates and metric labels; datagrams from further exporters are dropped and counted under exporter=\"other\"."`
	// Templates bounds NetFlow v9/IPFIX template state.
	Templates TemplateConfig `yaml:"templates" doc:"NetFlow v9 and IPFIX templates."`
	// Pending bounds the buffer of data sets waiting for their template.
	Pending PendingConfig `yaml:"pending" doc:"Buffer for NetFlow v9/IPFIX data sets that arrive before their template."`
	// ErrorLogRate limits decode-error log lines.
	ErrorLogRate float64 `yaml:"error_log_rate" doc:"Decode-error log lines per second over all exporters (the metric counts every error); 0 turns these logs off."`
}

// ListenerConfig configures one UDP listener.
type ListenerConfig struct {
	// Addr is the UDP address to listen on; empty disables the listener.
	Addr string `yaml:"addr" doc:"UDP address to listen on (HOST:PORT); empty turns the listener off."`
	// Sockets is the number of SO_REUSEPORT sockets, one worker each.
	Sockets int `yaml:"sockets" doc:"Sockets bound to the address with SO_REUSEPORT, each read by its own worker goroutine; the kernel spreads exporters over them by source address and port."`
	// ReceiveBuffer is the socket receive buffer in bytes.
	ReceiveBuffer int `yaml:"receive_buffer" doc:"Socket receive buffer in bytes (SO_RCVBUFFORCE when permitted, else SO_RCVBUF capped by net.core.rmem_max)."`
	// ReadBatch is the number of datagrams read per system call.
	ReadBatch int `yaml:"read_batch" doc:"Datagrams read per recvmmsg system call."`
	// MaxDatagram is the largest datagram accepted.
	MaxDatagram int `yaml:"max_datagram" doc:"Largest datagram in bytes; longer ones are cut by the kernel, dropped and counted (reason oversized)."`
}

// TemplateConfig bounds template state per exporter.
type TemplateConfig struct {
	// Max is the template limit per exporter.
	Max int `yaml:"max" doc:"Most templates and options templates kept per exporter (over all observation domains); further new templates are refused and counted."`
	// MaxFields is the largest field count of a template.
	MaxFields int `yaml:"max_fields" doc:"Largest number of fields in one template; larger templates are refused and counted."`
	// Expiry removes templates that were not refreshed.
	Expiry time.Duration `yaml:"expiry" doc:"A template not refreshed for this long is forgotten; 0 keeps templates until they change or are withdrawn."`
}

// PendingConfig bounds the buffer of early data sets per exporter.
type PendingConfig struct {
	// Bytes is the buffer size per exporter; 0 turns buffering off.
	Bytes int `yaml:"bytes" doc:"Buffer per exporter in bytes; 0 drops such data sets at once (they are counted as template misses)."`
	// Sets is the most data sets buffered per exporter.
	Sets int `yaml:"sets" doc:"Most data sets buffered per exporter."`
	// MaxAge drops buffered data sets after this long.
	MaxAge time.Duration `yaml:"max_age" doc:"Buffered data sets whose template has not arrived after this long are dropped."`
}

// DefaultConfig returns the default collector configuration.
func DefaultConfig() Config {
	lim := netflow.DefaultLimits()
	l := func(addr string) ListenerConfig {
		return ListenerConfig{Addr: addr, Sockets: 1, ReceiveBuffer: 8 << 20, ReadBatch: 64, MaxDatagram: 9216}
	}
	return Config{
		NetFlow:      l(":2055"),
		IPFIX:        l(":4739"),
		SFlow:        l(":6343"),
		MaxExporters: 1024,
		Templates:    TemplateConfig{Max: lim.MaxTemplates, MaxFields: lim.MaxFields, Expiry: lim.TemplateExpiry},
		Pending:      PendingConfig{Bytes: lim.PendingBytes, Sets: lim.PendingSets, MaxAge: lim.PendingAge},
		ErrorLogRate: 1,
	}
}

// limits returns the per-exporter session limits.
func (c Config) limits() netflow.Limits {
	lim := netflow.DefaultLimits()
	lim.MaxTemplates = c.Templates.Max
	lim.MaxFields = c.Templates.MaxFields
	lim.TemplateExpiry = c.Templates.Expiry
	lim.PendingBytes = c.Pending.Bytes
	lim.PendingSets = c.Pending.Sets
	lim.PendingAge = c.Pending.MaxAge
	return lim
}

// Validate checks the configuration; every problem is a *config.FieldError
// naming its key.
func (c Config) Validate() error {
	var errs []error
	for _, l := range []struct {
		key string
		cfg ListenerConfig
	}{{"netflow", c.NetFlow}, {"ipfix", c.IPFIX}, {"sflow", c.SFlow}} {
		errs = append(errs, l.cfg.validate(l.key))
	}
	for _, p := range c.Exporters {
		if _, err := parsePrefix(p); err != nil {
			errs = append(errs, config.Errorf("exporters", "%q is not a CIDR or address", p))
		}
	}
	if c.MaxExporters < 1 {
		errs = append(errs, config.Errorf("max_exporters", "must be at least 1"))
	}
	if c.Templates.Max < 1 {
		errs = append(errs, config.Errorf("templates.max", "must be at least 1"))
	}
	if c.Templates.MaxFields < 1 || c.Templates.MaxFields > 65535 {
		errs = append(errs, config.Errorf("templates.max_fields", "must be between 1 and 65535"))
	}
	if c.Templates.Expiry < 0 {
		errs = append(errs, config.Errorf("templates.expiry", "must not be negative"))
	}
	if c.Pending.Bytes < 0 || c.Pending.Bytes > 64<<20 {
		errs = append(errs, config.Errorf("pending.bytes", "must be between 0 and 67108864"))
	}
	if c.Pending.Sets < 0 {
		errs = append(errs, config.Errorf("pending.sets", "must not be negative"))
	}
	if c.Pending.MaxAge < 0 {
		errs = append(errs, config.Errorf("pending.max_age", "must not be negative"))
	}
	if c.ErrorLogRate < 0 {
		errs = append(errs, config.Errorf("error_log_rate", "must not be negative"))
	}
	return errors.Join(errs...)
}

func (l ListenerConfig) validate(key string) error {
	var errs []error
	if l.Addr != "" {
		host, port, err := net.SplitHostPort(l.Addr)
		if err != nil {
			errs = append(errs, config.Errorf(key+".addr", "%q is not HOST:PORT", l.Addr))
		} else {
			if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
				errs = append(errs, config.Errorf(key+".addr", "port %q is not a number from 0 to 65535", port))
			}
			if host != "" {
				if _, err := netip.ParseAddr(host); err != nil {
					errs = append(errs, config.Errorf(key+".addr", "host %q is not an IP address", host))
				}
			}
		}
	}
	if l.Sockets < 1 || l.Sockets > 256 {
		errs = append(errs, config.Errorf(key+".sockets", "must be between 1 and 256"))
	}
	if l.ReceiveBuffer < 0 {
		errs = append(errs, config.Errorf(key+".receive_buffer", "must not be negative"))
	}
	if l.ReadBatch < 1 || l.ReadBatch > 1024 {
		errs = append(errs, config.Errorf(key+".read_batch", "must be between 1 and 1024"))
	}
	if l.MaxDatagram < 512 || l.MaxDatagram > 65535 {
		errs = append(errs, config.Errorf(key+".max_datagram", "must be between 512 and 65535"))
	}
	return errors.Join(errs...)
}

// parsePrefix parses a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
