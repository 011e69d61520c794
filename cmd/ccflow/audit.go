package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newAuditCmd is a placeholder until issue 3 lands; it fails loudly.
func newAuditCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "audit",
		Short: "Verify the reveal audit log",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("audit: not implemented yet (issue 3)")
		},
	}
}
