// Package detect keeps windowed state per (subscriber pseudonym, remote
// endpoint) pair and per remote endpoint, scores beaconing and fan-in, and
// emits C&C candidates with their evidence. It performs no I/O.
package detect

// Config configures the detector.
type Config struct{}

// DefaultConfig returns the default detector configuration.
func DefaultConfig() Config { return Config{} }

// Validate checks the configuration.
func (c Config) Validate() error { return nil }
