package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newMigrateCmd is a placeholder until issue 8 lands; it fails loudly.
func newMigrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse schema",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("migrate: not implemented yet (issue 8)")
		},
	}
}
