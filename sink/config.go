package sink

import (
	"errors"

	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/sink/clickhouse"
	"github.com/ccflow/ccflow/sink/parquet"
)

// Config configures the sinks.
type Config struct {
	// Kind selects the sink.
	Kind string `yaml:"kind" doc:"Sink: parquet (files, the default) or clickhouse." enum:"parquet|clickhouse"`
	// Parquet configures the Parquet sink.
	Parquet parquet.Config `yaml:"parquet" doc:"Parquet sink settings."`
	// ClickHouse configures the ClickHouse sink and ccflow migrate.
	ClickHouse clickhouse.Config `yaml:"clickhouse" doc:"ClickHouse sink settings (also used by ccflow migrate)."`
}

// DefaultConfig returns the default sink configuration.
func DefaultConfig() Config {
	return Config{Kind: KindParquet, Parquet: parquet.DefaultConfig(), ClickHouse: clickhouse.DefaultConfig()}
}

// Sink kinds.
const (
	KindParquet    = "parquet"
	KindClickHouse = "clickhouse"
)

// Validate checks the configuration; keys in errors are relative to it.
func (c Config) Validate() error {
	errs := []error{
		config.Prefix("parquet", c.Parquet.Validate()),
		config.Prefix("clickhouse", c.ClickHouse.Validate()),
	}
	if c.Kind == KindClickHouse && c.ClickHouse.DSN == "" {
		errs = append(errs, config.Errorf("clickhouse.dsn", "must be set when sink.kind is clickhouse"))
	}
	return errors.Join(errs...)
}
