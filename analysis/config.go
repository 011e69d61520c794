// Package analysis is the detector side of the pipeline. It consumes batches
// of pseudonymized flows from the bus, drops batches delivered twice, feeds
// the detector, writes flows, pair scores and candidates to the sink, and
// periodically checkpoints the detector. Bus offsets are committed only after
// the checkpoint that includes their flows is on disk and the sink has made
// the rows derived from them durable (at-least-once end to end).
package analysis

import (
	"errors"
	"time"

	"github.com/ccflow/ccflow/config"
)

// Config configures the analysis stage.
type Config struct {
	// StateDir holds the detector checkpoint.
	StateDir string `yaml:"state_dir" doc:"Directory of the detector checkpoint (detector.ckpt), restored at start so a restart resumes its windows; empty turns checkpoints off (state is lost on restart, and bus offsets are committed after every batch)."`
	// CheckpointInterval is how often the detector is checkpointed.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval" doc:"How often (wall clock) the detector is checkpointed, the sink synced and bus offsets committed. Each sync closes the sink's open Parquet files, so minutes suit production."`
	// StoreFlows writes every pseudonymized flow to the sink.
	StoreFlows bool `yaml:"store_flows" doc:"Write every pseudonymized flow to the sink's flows table (pair scores and candidates are always written)."`
	// CandidatesFile also writes candidates as JSON lines.
	CandidatesFile string `yaml:"candidates_file" doc:"Also append reported (not suppressed) candidates to this file as JSON lines, the format ccflow eval reads; empty for none."`
	// DedupBatches is the number of recent batch IDs remembered.
	DedupBatches int `yaml:"dedup_batches" doc:"Recent batch IDs remembered to drop batches the bus delivers twice (16 bytes and a map entry each)."`
	// IdleAdvance advances event time when no flows arrive.
	IdleAdvance time.Duration `yaml:"idle_advance" doc:"When no flows arrive for this long (wall clock), the detector's watermark moves on with the wall clock so that windows still close; 0 turns it off."`
}

// DefaultConfig returns the default analysis configuration.
func DefaultConfig() Config {
	return Config{
		StateDir:           "ccflow-data/state",
		CheckpointInterval: 5 * time.Minute,
		StoreFlows:         true,
		CandidatesFile:     "ccflow-data/candidates.jsonl",
		DedupBatches:       1 << 16,
		IdleAdvance:        5 * time.Minute,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.CheckpointInterval < time.Second {
		errs = append(errs, config.Errorf("checkpoint_interval", "must be at least 1s, got %s", c.CheckpointInterval))
	}
	if c.DedupBatches < 1 {
		errs = append(errs, config.Errorf("dedup_batches", "must be at least 1"))
	}
	if c.IdleAdvance < 0 {
		errs = append(errs, config.Errorf("idle_advance", "must not be negative"))
	}
	return errors.Join(errs...)
}
