package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newKeysCmd is a placeholder until issue 3 lands; it fails loudly.
func newKeysCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keys",
		Short: "Manage epoch keys",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("keys: not implemented yet (issue 3)")
		},
	}
}
