// Package sink writes pseudonymized flows, pair scores and candidates to
// ClickHouse or Parquet files.
package sink

// Config configures the sinks.
type Config struct {
	// Kind selects the sink.
	Kind string `yaml:"kind" doc:"Sink: parquet (files, the default) or clickhouse." enum:"parquet|clickhouse"`
	// Parquet configures the Parquet sink.
	Parquet ParquetConfig `yaml:"parquet" doc:"Parquet sink settings."`
	// ClickHouse configures the ClickHouse sink.
	ClickHouse ClickHouseConfig `yaml:"clickhouse" doc:"ClickHouse sink settings."`
}

// ParquetConfig configures the Parquet sink.
type ParquetConfig struct {
	// Dir is the output directory.
	Dir string `yaml:"dir" doc:"Directory for the flows/, beacon_pairs/ and cc_candidates/ tables."`
}

// ClickHouseConfig configures the ClickHouse sink.
type ClickHouseConfig struct {
	// DSN is the ClickHouse address.
	DSN string `yaml:"dsn" doc:"ClickHouse DSN (clickhouse://user:pass@host:9000/db?secure=true)."`
}

// DefaultConfig returns the default sink configuration.
func DefaultConfig() Config { return Config{Kind: "parquet", Parquet: ParquetConfig{Dir: "ccflow-data"}} }

// Validate checks the configuration.
func (c Config) Validate() error { return nil }
