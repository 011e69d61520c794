package main

import (
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/ccflow/ccflow/privacy"
)

// addPrivacyFlags adds the privacy flags of every subcommand that reads
// flows: --subscribers CIDR[,CIDR...] (config privacy.subscribers) and
// --keys DIR (config privacy.keys_dir). Call it on the command's Flags()
// and then build the stage with newPrivacy.
func addPrivacyFlags(fs *pflag.FlagSet) {
	bindFlag(fs, "subscribers", "privacy.subscribers", "subscriber prefixes `CIDR[,CIDR...]`, IPv4 and IPv6")
	bindFlag(fs, "keys", "privacy.keys_dir", "epoch key `DIR`; without it keys live in a default directory ($STATE_DIRECTORY/keys, else ~/.local/state/ccflow/keys), created on first use and logged")
}

// newPrivacy builds the logger and the privacy stage the way every
// subcommand that reads flows must: the logger's handler redacts
// subscriber addresses (privacy.Redactor as ReplaceAttr) from the first
// line on, and the stage binds that redactor to the loaded prefixes. Use
// the returned logger for every stage of the command. The caller starts
// the stage (Start) and stops it (Stop); on error the logger is still
// usable to report it.
func newPrivacy(w io.Writer, cfg Config, reg prometheus.Registerer) (*privacy.Stage, *slog.Logger, error) {
	red := privacy.NewRedactor()
	logger := newLogger(w, cfg.Log, red.ReplaceAttr)
	st, err := privacy.New(cfg.Privacy, privacy.Deps{Logger: logger, Registerer: reg, Redactor: red})
	if err != nil {
		return nil, logger, err
	}
	return st, logger, nil
}
