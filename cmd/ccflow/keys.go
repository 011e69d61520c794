package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/privacy"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "List epoch keys, or destroy old ones so their epochs become anonymous",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the epochs that have a key (never the keys themselves)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			return runKeysList(cmd.OutOrStdout(), cfg.Privacy, time.Now())
		},
	}
	bindFlag(list.Flags(), "keys", "privacy.keys_dir", "key `DIR` (default: the default key directory)")

	var before string
	var dryRun bool
	destroy := &cobra.Command{
		Use:   "destroy --before DATE",
		Short: "Destroy the keys of every epoch that ends at or before DATE",
		Long: `destroy removes (after overwriting) the key file of every epoch that ends at or
before DATE and records in keyring.json that those epochs are destroyed, so that
no key is ever created for them again. Their pseudonyms can then no longer be
revealed or linked to later epochs: the data of those epochs is anonymous,
provided no other copy of the keys exists (backups, snapshots, other hosts; see
docs/privacy.md). Running collectors drop the keys within
privacy.reload_interval. The current epoch cannot be destroyed.`,
		Example: `  ccflow keys destroy --keys /var/lib/ccflow/keys --before 2024-03-01`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			if before == "" {
				return fmt.Errorf("--before DATE is required")
			}
			t, err := parseDate(before)
			if err != nil {
				return fmt.Errorf("--before: %w", err)
			}
			return runKeysDestroy(cmd.OutOrStdout(), cfg.Privacy, t, time.Now(), dryRun)
		},
	}
	bindFlag(destroy.Flags(), "keys", "privacy.keys_dir", "key `DIR` (default: the default key directory)")
	destroy.Flags().StringVar(&before, "before", "", "destroy epochs that end at or before `DATE` (YYYY-MM-DD, UTC midnight, or RFC 3339)")
	destroy.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would be destroyed")
	cmd.AddCommand(list, destroy)
	return cmd
}

func openKeyring(c privacy.Config) (*privacy.Keyring, error) {
	dir, _, err := resolveKeysDir(c)
	if err != nil {
		return nil, err
	}
	return privacy.OpenKeyring(dir)
}

func runKeysList(w io.Writer, c privacy.Config, now time.Time) error {
	ring, err := openKeyring(c)
	if err != nil {
		return err
	}
	epochs, err := ring.Epochs()
	if err != nil {
		return err
	}
	p := ring.Params()
	cur, _ := ring.EpochAt(now)
	fmt.Fprintf(w, "key directory %s: %s pseudonyms, epochs of %v from %s; current epoch %d; epochs before %d destroyed\n",
		ring.Dir(), p.Pseudonym, p.EpochLength, p.Origin.Format(time.RFC3339), cur, ring.DestroyedBefore())
	for _, e := range epochs {
		fmt.Fprintf(w, "epoch %d  %s .. %s\n", e, ring.EpochStart(e).Format(time.RFC3339), ring.EpochStart(e+1).Format(time.RFC3339))
	}
	return nil
}

func runKeysDestroy(w io.Writer, c privacy.Config, before, now time.Time, dryRun bool) error {
	ring, err := openKeyring(c)
	if err != nil {
		return err
	}
	if dryRun {
		epochs, err := ring.Epochs()
		if err != nil {
			return err
		}
		for _, e := range epochs {
			if !ring.EpochStart(e + 1).After(before) {
				fmt.Fprintf(w, "would destroy epoch %d  %s .. %s\n", e, ring.EpochStart(e).Format(time.RFC3339), ring.EpochStart(e+1).Format(time.RFC3339))
			}
		}
		return nil
	}
	gone, err := ring.Destroy(before, now)
	for _, e := range gone {
		fmt.Fprintf(w, "destroyed epoch %d  %s .. %s\n", e, ring.EpochStart(e).Format(time.RFC3339), ring.EpochStart(e+1).Format(time.RFC3339))
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%d key(s) destroyed; epochs before %d are destroyed for good\n", len(gone), ring.DestroyedBefore())
	return nil
}
