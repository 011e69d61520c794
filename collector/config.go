// Package collector receives NetFlow v5/v9, IPFIX and sFlow datagrams on UDP,
// decodes them and hands normalized flow.Records to an in-memory handler.
package collector

// Config configures the collector stage.
type Config struct {
	// NetFlow is the NetFlow v5/v9 listener.
	NetFlow ListenerConfig `yaml:"netflow" doc:"NetFlow v5/v9 listener."`
	// IPFIX is the IPFIX listener.
	IPFIX ListenerConfig `yaml:"ipfix" doc:"IPFIX listener."`
	// SFlow is the sFlow v5 listener.
	SFlow ListenerConfig `yaml:"sflow" doc:"sFlow v5 listener."`
}

// ListenerConfig configures one UDP listener.
type ListenerConfig struct {
	// Addr is the UDP address to listen on; empty disables the listener.
	Addr string `yaml:"addr" doc:"UDP address to listen on (HOST:PORT); empty turns the listener off."`
}

// DefaultConfig returns the default collector configuration.
func DefaultConfig() Config {
	return Config{
		NetFlow: ListenerConfig{Addr: ":2055"},
		IPFIX:   ListenerConfig{Addr: ":4739"},
		SFlow:   ListenerConfig{Addr: ":6343"},
	}
}

// Validate checks the configuration.
func (c Config) Validate() error { return nil }
