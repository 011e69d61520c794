package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/privacy"
)

// keygenOptions are keygen's flags that are not configuration keys.
type keygenOptions struct {
	ahead  uint32
	from   string
	origin string
}

func newKeygenCmd() *cobra.Command {
	var o keygenOptions
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Create epoch keys (a key directory, and the keys of the current and next epochs)",
		Long: `keygen creates a key directory (mode 0700) if needed and one independent random
key per epoch (files 0600): the epoch containing now (or --from) through --ahead
epochs after it. Existing keys are never replaced. A flow's epoch is
floor((start time - origin) / epoch length); the origin and the epoch length are
fixed when the directory is created.

Run it on the key host and copy the key files to collectors that run with
privacy.create_keys: false, so that every collector uses the same keys; see
docs/privacy.md.`,
		Example: `  ccflow keygen --dir /var/lib/ccflow/keys --epoch-length 168h --ahead 4`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			return runKeygen(cmd.OutOrStdout(), cfg.Privacy, o, time.Now())
		},
	}
	fs := cmd.Flags()
	bindFlag(fs, "dir", "privacy.keys_dir", "key `DIR` to create or extend (default: the default key directory)")
	bindFlag(fs, "epoch-length", "privacy.epoch_length", "epoch `LENGTH` for a new key directory, e.g. 168h")
	bindFlag(fs, "pseudonym", "privacy.pseudonym", "pseudonym `MODE` for a new key directory: aes-128, aes-256 or cryptopan")
	fs.Uint32Var(&o.ahead, "ahead", 1, "also create the keys of the `N` epochs after the current one")
	fs.StringVar(&o.from, "from", "", "start with the epoch containing `DATE` (RFC 3339 or YYYY-MM-DD, UTC), for replaying old flows")
	fs.StringVar(&o.origin, "origin", "", "start of epoch 0 for a new key directory (RFC 3339; default 1970-01-05T00:00:00Z, a Monday)")
	return cmd
}

// resolveKeysDir returns the configured key directory or the default one,
// and whether it is the default.
func resolveKeysDir(c privacy.Config) (string, bool, error) {
	if c.KeysDir != "" {
		return c.KeysDir, false, nil
	}
	d, err := privacy.DefaultKeysDir()
	return d, true, err
}

// parseDate parses an RFC 3339 time or a YYYY-MM-DD date (UTC midnight).
func parseDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a date (YYYY-MM-DD) or an RFC 3339 time", s)
	}
	return t, nil
}

func runKeygen(w io.Writer, c privacy.Config, o keygenOptions, now time.Time) error {
	dir, def, err := resolveKeysDir(c)
	if err != nil {
		return err
	}
	if def {
		fmt.Fprintf(w, "no --dir given: using the default key directory %s\n", dir)
	}
	p := privacy.KeyringParams{EpochLength: c.EpochLength, Pseudonym: c.Pseudonym}
	if o.origin != "" {
		if p.Origin, err = time.Parse(time.RFC3339, o.origin); err != nil {
			return fmt.Errorf("--origin: %q is not an RFC 3339 time", o.origin)
		}
	}
	ring, err := privacy.CreateKeyring(dir, p)
	if err != nil {
		return err
	}
	first, err := ring.EpochAt(now)
	if err != nil {
		return err
	}
	last := first + o.ahead
	if o.from != "" {
		t, err := parseDate(o.from)
		if err != nil {
			return fmt.Errorf("--from: %w", err)
		}
		if first, err = ring.EpochAt(t); err != nil {
			return fmt.Errorf("--from: %w", err)
		}
	}
	if first < ring.DestroyedBefore() {
		fmt.Fprintf(w, "epochs before %d were destroyed; starting at %d\n", ring.DestroyedBefore(), ring.DestroyedBefore())
		first = ring.DestroyedBefore()
	}
	prm := ring.Params()
	fmt.Fprintf(w, "key directory %s: %s pseudonyms, epochs of %v from %s\n", dir, prm.Pseudonym, prm.EpochLength, prm.Origin.Format(time.RFC3339))
	for e := first; e <= last; e++ {
		created, err := ring.CreateKey(e, nil)
		if err != nil {
			return err
		}
		state := "exists"
		if created {
			state = "created"
		}
		fmt.Fprintf(w, "epoch %d  %s .. %s  %s\n", e, ring.EpochStart(e).Format(time.RFC3339), ring.EpochStart(e+1).Format(time.RFC3339), state)
	}
	return nil
}
