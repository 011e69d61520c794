package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/privacy"
)

// ccflow runs the root command with args and returns stdout, stderr and
// the error.
func ccflow(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

// tokenFor pseudonymizes a flow at time at from subscriber address sub with
// the (24h-epoch) keys in dir and returns the token and epoch, as an analyst
// reads them from the flows table.
func tokenFor(t *testing.T, dir, sub string, at time.Time) (string, uint32) {
	t.Helper()
	return tokenForMode(t, dir, privacy.ModeAES128, sub, at)
}

// tokenForMode is tokenFor for a key directory of another pseudonym mode.
func tokenForMode(t *testing.T, dir, mode, sub string, at time.Time) (string, uint32) {
	t.Helper()
	cfg := privacy.DefaultConfig()
	cfg.Pseudonym = mode
	cfg.Subscribers = []string{"192.0.2.0/24", "2001:db8:1::/48"}
	cfg.KeysDir = dir
	cfg.CreateKeys = false
	cfg.EpochLength = 24 * time.Hour
	st, err := privacy.New(cfg, privacy.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	rec := flow.Record{TimeStartMs: at.UnixMilli(), SrcAddr: flow.RawAddr(netip.MustParseAddr(sub).As16()),
		DstAddr: flow.RawAddr(netip.MustParseAddr("198.51.100.9").As16()), SrcPort: 1, DstPort: 443, Proto: 6}
	out := st.Pseudonymize([]flow.Record{rec}, nil)
	if len(out) != 1 {
		t.Fatal("no flow")
	}
	return out[0].Sub.String(), out[0].Epoch
}

func itoa(e uint32) string { return strconv.FormatUint(uint64(e), 10) }

func TestKeygenRevealAuditDestroy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	out, _, err := ccflow(t, "keygen", "--dir", dir, "--epoch-length", "24h", "--ahead", "2")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "created") != 3 {
		t.Errorf("keygen output:\n%s", out)
	}
	// Run again: nothing replaced.
	out, _, err = ccflow(t, "keygen", "--dir", dir, "--epoch-length", "24h")
	if err != nil || strings.Contains(out, "created") {
		t.Errorf("second keygen: %v\n%s", err, out)
	}
	// Another epoch length for the same directory is refused.
	if _, _, err := ccflow(t, "keygen", "--dir", dir, "--epoch-length", "48h"); !errors.Is(err, privacy.ErrKeyringMismatch) {
		t.Errorf("keygen with another epoch length: %v", err)
	}
	out, _, err = ccflow(t, "keys", "list", "--keys", dir)
	if err != nil || strings.Count(out, "\nepoch ") != 3 {
		t.Errorf("keys list: %v\n%s", err, out)
	}

	token, epoch := tokenFor(t, dir, "192.0.2.7", time.Now())
	e := itoa(epoch)
	auditLog := filepath.Join(dir, "audit.log")

	// Reveal round trip, with and without subscriber prefixes.
	out, errOut, err := ccflow(t, "reveal", "--keys", dir, "--epoch", e, "--reason", "ticket 1", "--operator", "alice", token)
	if err != nil || out != token+" 192.0.2.7\n" {
		t.Fatalf("reveal: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	if !strings.Contains(errOut, "audit log "+auditLog+": head 1:") {
		t.Errorf("reveal does not print the audit head: %q", errOut)
	}
	out, _, err = ccflow(t, "reveal", "--keys", dir, "--subscribers", "192.0.2.0/24", "--epoch", e, "--reason", "ticket 2", token)
	if err != nil || out != token+" 192.0.2.7\n" {
		t.Fatalf("reveal with prefixes: %v %q", err, out)
	}
	// Wrong epoch: refused, audited as failed.
	out, errOut, err = ccflow(t, "reveal", "--keys", dir, "--subscribers", "192.0.2.0/24", "--epoch", itoa(epoch+1), "--reason", "ticket 3", token)
	var ee *exitError
	if !errors.As(err, &ee) || out != "" || !strings.Contains(errOut, "wrong key or epoch") {
		t.Errorf("reveal with the wrong epoch: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	// Missing key.
	_, errOut, err = ccflow(t, "reveal", "--keys", dir, "--epoch", "7", "--reason", "ticket 4", token)
	if err == nil || !strings.Contains(errOut, "no key for epoch: epoch 7") {
		t.Errorf("reveal without a key: %v %q", err, errOut)
	}
	// No reason, bad token: refused before anything is revealed or logged.
	if _, _, err := ccflow(t, "reveal", "--keys", dir, "--epoch", e, token); err == nil || !strings.Contains(err.Error(), "--reason") {
		t.Errorf("reveal without a reason: %v", err)
	}
	if _, _, err := ccflow(t, "reveal", "--keys", dir, "--epoch", e, "--reason", "x", "nothex"); err == nil {
		t.Error("reveal of a malformed token succeeded")
	}

	// The audit log holds four entries, without any address.
	out, _, err = ccflow(t, "audit", "verify", "--log", auditLog)
	if err != nil || !strings.Contains(out, "intact: 4 entries") {
		t.Fatalf("audit verify: %v %q", err, out)
	}
	data, _ := os.ReadFile(auditLog)
	if bytes.Contains(data, []byte("192.0.2.7")) || !bytes.Contains(data, []byte(`"operator":"alice"`)) || !bytes.Contains(data, []byte(`"reason":"ticket 3"`)) {
		t.Errorf("audit log content:\n%s", data)
	}
	head := strings.Fields(out)[len(strings.Fields(out))-1]
	if _, _, err := ccflow(t, "audit", "verify", "--keys", dir, "--head", head); err != nil {
		t.Errorf("audit verify (default location) against its head: %v", err)
	}
	// Tampering: delete entry 2.
	lines := bytes.SplitAfter(data, []byte("\n"))
	if err := os.WriteFile(auditLog, bytes.Join([][]byte{lines[0], lines[2], lines[3]}, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = ccflow(t, "audit", "verify", "--log", auditLog)
	if !errors.As(err, &ee) || ee.code != exitAuditBroken || !strings.Contains(ee.msg, "line 2 (entry 2)") {
		t.Errorf("audit verify of a tampered log: %v", err)
	}
	// A broken log blocks further reveals.
	if _, _, err := ccflow(t, "reveal", "--keys", dir, "--epoch", e, "--reason", "ticket 5", token); !errors.Is(err, privacy.ErrAuditBroken) {
		t.Errorf("reveal with a broken audit log: %v", err)
	}
	if err := os.WriteFile(auditLog, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// Loose permissions are refused with the fix in the message.
	key := filepath.Join(dir, fmt.Sprintf("epoch-%010d.key", epoch))
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = ccflow(t, "reveal", "--keys", dir, "--epoch", e, "--reason", "ticket 6", token)
	if err == nil || !strings.Contains(errOut, "chmod 600 "+key) {
		t.Errorf("reveal with a loose key file: %v %q", err, errOut)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}

	// Destroy: keys of old epochs go, and their tokens can no longer be
	// revealed.
	day := 24 * time.Hour
	if _, _, err := ccflow(t, "keys", "destroy", "--keys", dir, "--before", time.Now().Add(2*day).Format(time.RFC3339)); err == nil || !strings.Contains(err.Error(), "current epoch") {
		t.Errorf("destroying the current epoch: %v", err)
	}
	old := time.Now().Add(-4 * day)
	if out, _, err := ccflow(t, "keygen", "--dir", dir, "--from", old.Format(time.RFC3339), "--epoch-length", "24h"); err != nil || strings.Count(out, "created") != 4 {
		t.Fatalf("keygen --from: %v\n%s", err, out)
	}
	oldToken, oldEpoch := tokenFor(t, dir, "2001:db8:1::7", old)
	revealOld := func() (string, string, error) {
		return ccflow(t, "reveal", "--keys", dir, "--subscribers", "2001:db8:1::/48", "--epoch", itoa(oldEpoch), "--reason", "old", oldToken)
	}
	if out, _, err := revealOld(); err != nil || out != oldToken+" 2001:db8:1::7\n" {
		t.Fatalf("reveal of an old token: %v %q", err, out)
	}
	cut := time.Now().Add(-2 * day).Format(time.RFC3339)
	out, _, err = ccflow(t, "keys", "destroy", "--keys", dir, "--before", cut, "--dry-run")
	if err != nil || strings.Count(out, "would destroy") != 2 {
		t.Errorf("dry run: %v %q", err, out)
	}
	out, _, err = ccflow(t, "keys", "destroy", "--keys", dir, "--before", cut)
	if err != nil || strings.Count(out, "destroyed epoch") != 2 || !strings.Contains(out, "epoch "+itoa(oldEpoch)) {
		t.Errorf("destroy: %v %q", err, out)
	}
	if _, errOut, err := revealOld(); err == nil || !strings.Contains(errOut, "was destroyed") {
		t.Errorf("reveal after destroy: %v %q", err, errOut)
	}
}

// TestRevealCryptoPAn: a Crypto-PAn key directory reveals with prefixes,
// and reveal says that its wrong-key check is weaker (docs/privacy.md).
func TestRevealCryptoPAn(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if _, _, err := ccflow(t, "keygen", "--dir", dir, "--epoch-length", "24h", "--pseudonym", "cryptopan"); err != nil {
		t.Fatal(err)
	}
	token, epoch := tokenForMode(t, dir, privacy.ModeCryptoPAn, "192.0.2.7", time.Now())
	out, errOut, err := ccflow(t, "reveal", "--keys", dir, "--subscribers", "192.0.2.0/24", "--epoch", itoa(epoch), "--reason", "ticket 9", token)
	if err != nil || out != token+" 192.0.2.7\n" {
		t.Fatalf("reveal: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
	if !strings.Contains(errOut, "note: Crypto-PAn key directory") {
		t.Errorf("reveal does not warn about the Crypto-PAn check: %q", errOut)
	}
	// Without prefixes a Crypto-PAn result cannot be checked: refused.
	out, errOut, err = ccflow(t, "reveal", "--keys", dir, "--epoch", itoa(epoch), "--reason", "ticket 10", token)
	var ee *exitError
	if !errors.As(err, &ee) || out != "" || !strings.Contains(errOut, "--subscribers") {
		t.Errorf("reveal without prefixes: %v\nstdout %q\nstderr %q", err, out, errOut)
	}
}

func TestPrivacyFlagsAndLogger(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	var logs bytes.Buffer
	var st *privacy.Stage
	cmd := &cobra.Command{
		Use: "x",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			var logger *slog.Logger
			st, logger, err = newPrivacy(&logs, cfg, prometheus.NewRegistry())
			if err != nil {
				return err
			}
			logger.Info("connection from 192.0.2.7 to 198.51.100.9")
			return nil
		},
	}
	addGlobalFlags(cmd)
	addPrivacyFlags(cmd.Flags())
	cmd.SetArgs([]string{"--subscribers", "192.0.2.0/24,2001:db8:1::/48", "--keys", dir})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if st.KeysDir() != dir || st.Subscribers().Len() != 2 {
		t.Errorf("stage: keys %s, %d prefixes", st.KeysDir(), st.Subscribers().Len())
	}
	if strings.Contains(logs.String(), "192.0.2.7") || !strings.Contains(logs.String(), "198.51.100.9") {
		t.Errorf("logger does not redact subscriber addresses only:\n%s", logs.String())
	}
}
