package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRevealCmd is a placeholder until issue 3 lands; it fails loudly.
func newRevealCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reveal",
		Short: "Reveal the subscriber behind a pseudonym (audited)",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("reveal: not implemented yet (issue 3)")
		},
	}
}
