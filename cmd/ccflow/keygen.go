package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newKeygenCmd is a placeholder until issue 3 lands; it fails loudly.
func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Create epoch keys",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("keygen: not implemented yet (issue 3)")
		},
	}
}
