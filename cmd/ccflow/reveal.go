package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy"
)

// revealOptions are reveal's flags that are not configuration keys.
type revealOptions struct {
	epoch    uint32
	reason   string
	operator string
}

func newRevealCmd() *cobra.Command {
	var o revealOptions
	cmd := &cobra.Command{
		Use:   "reveal --keys DIR --epoch E --reason TEXT TOKEN...",
		Short: "Reveal the subscriber behind pseudonyms (audited)",
		Long: `reveal prints the subscriber address behind each pseudonym TOKEN (32 hex digits,
as stored in the Sub and Peer columns) of key epoch E, one "TOKEN ADDRESS" line
each. It needs the epoch's key. Before printing anything it appends an entry
(time, operator, reason, token, epoch, outcome; never the address) to the
append-only, hash-chained audit log, and it prints nothing it could not record.

A token revealed with the wrong epoch or key decrypts to a random address; reveal
refuses results outside the subscriber prefixes (--subscribers or
privacy.subscribers_file). Without prefixes it accepts IPv4 results only.

Record the audit head printed at the end outside this host; "ccflow audit verify
--head" checks the log against it.`,
		Example: `  ccflow reveal --keys /var/lib/ccflow/keys --epoch 2836 --reason "abuse ticket 4711" 3f1c...`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			if !cmd.Flags().Changed("epoch") {
				return errors.New("--epoch E is required (the Epoch column next to the token)")
			}
			return runReveal(cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg.Privacy, o, args, time.Now())
		},
	}
	fs := cmd.Flags()
	addPrivacyFlags(fs)
	bindFlag(fs, "audit-log", "privacy.audit_log", "audit log `FILE` (default: audit.log in the key directory)")
	fs.Uint32Var(&o.epoch, "epoch", 0, "key epoch `E` of the tokens")
	fs.StringVar(&o.reason, "reason", "", "why the reveal is needed, e.g. an abuse ticket (`TEXT`, required, recorded)")
	fs.StringVar(&o.operator, "operator", "", "who asks for the reveal (`NAME`, recorded; default: the user running the command, or $SUDO_USER)")
	return cmd
}

// operatorName returns who runs the command: $SUDO_USER (the human behind
// sudo) or the current user.
func operatorName() (operator, osUser string) {
	if u, err := user.Current(); err == nil {
		osUser = u.Username
	}
	operator = osUser
	if s := os.Getenv("SUDO_USER"); s != "" {
		operator = s
	}
	return operator, osUser
}

func runReveal(stdout, stderr io.Writer, c privacy.Config, o revealOptions, tokens []string, now time.Time) error {
	if strings.TrimSpace(o.reason) == "" {
		return errors.New("--reason TEXT is required: say why (it is recorded in the audit log)")
	}
	// Check every token before revealing any.
	ps := make([]flow.Pseudonym, len(tokens))
	for i, t := range tokens {
		p, err := flow.ParsePseudonym(strings.ToLower(t))
		if err != nil {
			return fmt.Errorf("token %d: %w", i+1, err)
		}
		ps[i] = p
	}
	ring, err := openKeyring(c)
	if err != nil {
		return err
	}
	if ring.Params().Pseudonym == privacy.ModeCryptoPAn {
		fmt.Fprintln(stderr, "note: Crypto-PAn key directory: a wrong --epoch or key directory is caught less reliably than with AES (see docs/privacy.md); take --epoch from the token's epoch column")
	}
	var subs *privacy.Subscribers
	if len(c.Subscribers) > 0 || c.SubscribersFile != "" {
		if subs, err = privacy.LoadSubscribers(c); err != nil {
			return err
		}
	}
	auditPath := c.AuditLog
	if auditPath == "" {
		auditPath = ring.AuditLog()
	}
	operator, osUser := operatorName()
	if o.operator != "" {
		operator = o.operator
	}
	host, _ := os.Hostname()
	var head privacy.AuditEntry
	failed := 0
	for i, p := range ps {
		addr, err := ring.Reveal(o.epoch, p)
		if err == nil {
			err = ring.CheckRevealed(addr, subs)
		}
		outcome := privacy.OutcomeRevealed
		if err != nil {
			outcome = privacy.OutcomeFailed + ": " + err.Error()
		}
		head, err = privacy.AppendAudit(auditPath, privacy.AuditEntry{
			Time: now, Operator: operator, User: osUser, Host: host, Reason: o.reason,
			Epoch: o.epoch, Token: p.String(), Outcome: outcome,
		})
		if err != nil {
			return fmt.Errorf("not revealing %s: %w", p, err)
		}
		if outcome != privacy.OutcomeRevealed {
			failed++
			fmt.Fprintf(stderr, "%s: %s\n", tokens[i], strings.TrimPrefix(outcome, privacy.OutcomeFailed+": "))
			continue
		}
		fmt.Fprintf(stdout, "%s %s\n", p, addr)
	}
	fmt.Fprintf(stderr, "audit log %s: head %d:%s (record it outside this host)\n", auditPath, head.Seq, head.Hash)
	if failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d token(s) not revealed", failed, len(ps))}
	}
	return nil
}
