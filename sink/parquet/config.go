package parquet

import (
	"errors"
	"time"

	"github.com/ccflow/ccflow/config"
)

// Config configures the Parquet sink.
type Config struct {
	// Dir is the root of the tables.
	Dir string `yaml:"dir" doc:"Directory for the flows/, beacon_pairs/ and cc_candidates/ tables."`
	// RotateInterval and MaxFileBytes rotate files.
	RotateInterval time.Duration `yaml:"rotate_interval" doc:"A file is closed and appears on disk when its first row is this old."`
	MaxFileBytes   int64         `yaml:"max_file_bytes" doc:"A file is closed and appears on disk when it reaches this many (compressed) bytes."`
	// RowGroupRows is the Parquet row group length.
	RowGroupRows int `yaml:"row_group_rows" doc:"Rows per Parquet row group."`
	// Compression is the Parquet compression codec.
	Compression string `yaml:"compression" doc:"Parquet compression codec." enum:"zstd|snappy|gzip|none"`
	// MaxPendingBytes bounds the memory of files not yet on disk.
	MaxPendingBytes int64 `yaml:"max_pending_bytes" doc:"Memory bound: bytes of closed files waiting for the disk (unwritable or full directory); beyond it writes wait."`
	// RetryInitial and RetryMax bound the backoff of failed file writes.
	RetryInitial time.Duration `yaml:"retry_initial" doc:"First wait before retrying a failed file write; it doubles up to retry_max."`
	RetryMax     time.Duration `yaml:"retry_max" doc:"Longest wait between file write retries."`
	// StopTimeout bounds how long Stop retries a failing disk.
	StopTimeout time.Duration `yaml:"stop_timeout" doc:"At stop, how long to keep retrying files that cannot be written before giving up (and reporting their rows)."`
}

// DefaultConfig returns the default Parquet sink configuration.
func DefaultConfig() Config {
	return Config{
		Dir:             "ccflow-data",
		RotateInterval:  5 * time.Minute,
		MaxFileBytes:    64 << 20,
		RowGroupRows:    64 * 1024,
		Compression:     "zstd",
		MaxPendingBytes: 256 << 20,
		RetryInitial:    500 * time.Millisecond,
		RetryMax:        30 * time.Second,
		StopTimeout:     time.Minute,
	}
}

// Validate checks the configuration; keys in errors are relative to it.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, config.Errorf("dir", "must not be empty"))
	}
	if c.RotateInterval < 100*time.Millisecond {
		errs = append(errs, config.Errorf("rotate_interval", "must be at least 100ms"))
	}
	if c.MaxFileBytes < 1<<20 {
		errs = append(errs, config.Errorf("max_file_bytes", "must be at least 1 MiB"))
	}
	if c.RowGroupRows < 1 {
		errs = append(errs, config.Errorf("row_group_rows", "must be at least 1"))
	}
	switch c.Compression {
	case "zstd", "snappy", "gzip", "none":
	default:
		errs = append(errs, &config.FieldError{Key: "compression", Msg: "unknown codec " + c.Compression, Allowed: []string{"zstd", "snappy", "gzip", "none"}})
	}
	if c.MaxPendingBytes < c.MaxFileBytes {
		errs = append(errs, config.Errorf("max_pending_bytes", "must be at least max_file_bytes"))
	}
	if c.RetryInitial <= 0 {
		errs = append(errs, config.Errorf("retry_initial", "must be positive"))
	}
	if c.RetryMax < c.RetryInitial {
		errs = append(errs, config.Errorf("retry_max", "must be at least retry_initial"))
	}
	if c.StopTimeout <= 0 {
		errs = append(errs, config.Errorf("stop_timeout", "must be positive"))
	}
	return errors.Join(errs...)
}
