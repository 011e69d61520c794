package clickhouse

import (
	"errors"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/ccflow/ccflow/config"
)

// Config configures the ClickHouse sink and `ccflow migrate`.
type Config struct {
	// DSN names the server, database and options.
	DSN string `yaml:"dsn" doc:"ClickHouse DSN for the native protocol (clickhouse://user:pass@host:9000/db?secure=true); the database must exist."`
	// Username and Password override the DSN's credentials.
	Username string `yaml:"username" doc:"User name; overrides the DSN's. Set it with the environment variable to keep it out of files."`
	Password string `yaml:"password" doc:"Password; overrides the DSN's. Prefer the environment variable or password_file."`
	// PasswordFile holds the password (first line) and overrides Password.
	PasswordFile string `yaml:"password_file" doc:"File whose first line is the password; overrides password."`
	// TLS configures TLS to the server.
	TLS TLSConfig `yaml:"tls" doc:"TLS to the server (the DSN's secure=true also turns it on)."`
	// FlowsTTL and PairsTTL are the retention of flows (and the hourly
	// rollup) and of pair scores; 0 keeps rows for ever.
	FlowsTTL time.Duration `yaml:"flows_ttl" doc:"Retention of flows and of the hourly rollup (0 keeps them); set when ccflow migrate creates the tables."`
	PairsTTL time.Duration `yaml:"pairs_ttl" doc:"Retention of beacon_pairs (0 keeps them); set when ccflow migrate creates the table."`
	// BatchRows and BatchInterval bound an insert block.
	BatchRows     int           `yaml:"batch_rows" doc:"A table's buffer becomes an insert block when it holds this many rows."`
	BatchInterval time.Duration `yaml:"batch_interval" doc:"A table's buffer becomes an insert block when its oldest row is this old."`
	// MaxBufferedRows bounds the rows held in memory.
	MaxBufferedRows int `yaml:"max_buffered_rows" doc:"Rows held in memory (buffers and blocks waiting to be inserted); beyond it blocks spill to spill_dir, or writes wait."`
	// SpillDir holds blocks that could not be inserted.
	SpillDir string `yaml:"spill_dir" doc:"Directory for blocks that wait for ClickHouse when memory is full; empty turns spilling off (writes then wait)."`
	// MaxSpillBytes bounds SpillDir.
	MaxSpillBytes int64 `yaml:"max_spill_bytes" doc:"Bytes of spilled blocks at most; beyond it writes wait."`
	// RetryInitial and RetryMax bound the exponential backoff.
	RetryInitial time.Duration `yaml:"retry_initial" doc:"First wait before retrying a failed insert; it doubles up to retry_max."`
	RetryMax     time.Duration `yaml:"retry_max" doc:"Longest wait between insert retries."`
	// InsertTimeout bounds one insert.
	InsertTimeout time.Duration `yaml:"insert_timeout" doc:"Time limit of one insert (dial, send, acknowledge)."`
}

// TLSConfig configures TLS.
type TLSConfig struct {
	// Enable turns TLS on.
	Enable bool `yaml:"enable" doc:"Connect with TLS."`
	// CAFile, CertFile and KeyFile are PEM files.
	CAFile   string `yaml:"ca_file" doc:"PEM file of the CA certificates to trust (default: the system's)."`
	CertFile string `yaml:"cert_file" doc:"PEM client certificate for mutual TLS."`
	KeyFile  string `yaml:"key_file" doc:"PEM private key of cert_file."`
	// ServerName overrides the name checked in the server's certificate.
	ServerName string `yaml:"server_name" doc:"Server name to verify (default: the DSN's host)."`
	// InsecureSkipVerify turns certificate checks off.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify" doc:"Do not verify the server certificate (tests only)."`
}

// DefaultConfig returns the default ClickHouse sink configuration.
func DefaultConfig() Config {
	return Config{
		FlowsTTL:        30 * 24 * time.Hour,
		PairsTTL:        90 * 24 * time.Hour,
		BatchRows:       100_000,
		BatchInterval:   5 * time.Second,
		MaxBufferedRows: 1_000_000,
		SpillDir:        "ccflow-spill",
		MaxSpillBytes:   10 << 30,
		RetryInitial:    500 * time.Millisecond,
		RetryMax:        30 * time.Second,
		InsertTimeout:   60 * time.Second,
	}
}

// Validate checks the configuration; keys in errors are relative to it.
// An empty DSN is valid here (the sink is optional); the sink and migrate
// refuse it when they need a server.
func (c Config) Validate() error {
	var errs []error
	if c.DSN != "" {
		if _, err := clickhouse.ParseDSN(c.DSN); err != nil {
			errs = append(errs, config.Errorf("dsn", "not a valid ClickHouse DSN: %v", err))
		}
	}
	if c.FlowsTTL < 0 || (c.FlowsTTL > 0 && c.FlowsTTL < time.Hour) {
		errs = append(errs, config.Errorf("flows_ttl", "must be 0 (keep) or at least 1h"))
	}
	if c.PairsTTL < 0 || (c.PairsTTL > 0 && c.PairsTTL < time.Hour) {
		errs = append(errs, config.Errorf("pairs_ttl", "must be 0 (keep) or at least 1h"))
	}
	if c.BatchRows < 1 {
		errs = append(errs, config.Errorf("batch_rows", "must be at least 1"))
	}
	if c.BatchInterval <= 0 {
		errs = append(errs, config.Errorf("batch_interval", "must be positive"))
	}
	if c.MaxBufferedRows < c.BatchRows {
		errs = append(errs, config.Errorf("max_buffered_rows", "must be at least batch_rows (%d)", c.BatchRows))
	}
	if c.SpillDir != "" && c.MaxSpillBytes <= 0 {
		errs = append(errs, config.Errorf("max_spill_bytes", "must be positive when spill_dir is set"))
	}
	if c.RetryInitial <= 0 {
		errs = append(errs, config.Errorf("retry_initial", "must be positive"))
	}
	if c.RetryMax < c.RetryInitial {
		errs = append(errs, config.Errorf("retry_max", "must be at least retry_initial"))
	}
	if c.InsertTimeout <= 0 {
		errs = append(errs, config.Errorf("insert_timeout", "must be positive"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, config.Errorf("tls", "cert_file and key_file go together"))
	}
	return errors.Join(errs...)
}
