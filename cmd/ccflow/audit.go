package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/privacy"
)

// exitAuditBroken is the exit status of `ccflow audit verify` when the log
// is broken (1 is any other error, such as an unreadable file).
const exitAuditBroken = 2

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify the reveal audit log",
	}
	var head string
	verify := &cobra.Command{
		Use:   "verify --log FILE",
		Short: "Check the audit log's hash chain; exit 0 when intact, 2 naming the first bad entry",
		Long: `verify checks every entry of the reveal audit log: its encoding, its number, its
link to the previous entry and its hash. An edited, deleted, inserted or reordered
entry is reported as "audit log broken at line L (entry S): ..." with exit status 2.

Removing the newest entries, or rewriting the chain from some entry on, is only
detectable against a head recorded earlier (reveal prints it): pass it with --head.`,
		Example: `  ccflow audit verify --log /var/lib/ccflow/keys/audit.log --head 41:9b0c...`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			return runAuditVerify(cmd.OutOrStdout(), cfg.Privacy, head)
		},
	}
	bindFlag(verify.Flags(), "log", "privacy.audit_log", "audit log `FILE` (default: audit.log in the key directory)")
	bindFlag(verify.Flags(), "keys", "privacy.keys_dir", "key `DIR` whose audit.log to check when --log is not given")
	verify.Flags().StringVar(&head, "head", "", "a head recorded earlier, `SEQ:HASH`: the log must still contain it")
	cmd.AddCommand(verify)
	return cmd
}

func runAuditVerify(w io.Writer, c privacy.Config, head string) error {
	path := c.AuditLog
	if path == "" {
		dir, _, err := resolveKeysDir(c)
		if err != nil {
			return err
		}
		path = dir + "/audit.log"
	}
	var want *privacy.AuditHead
	if head != "" {
		h, err := privacy.ParseAuditHead(head)
		if err != nil {
			return fmt.Errorf("--head: %w", err)
		}
		want = &h
	}
	got, err := privacy.VerifyAuditFile(path, want)
	if errors.Is(err, privacy.ErrAuditBroken) {
		return &exitError{code: exitAuditBroken, msg: fmt.Sprintf("%s: %v", path, err)}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "audit log %s intact: %d entries, head %s\n", path, got.Entries, got)
	return nil
}
