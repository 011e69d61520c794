package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newEvalCmd is a placeholder until issue 4 lands; it fails loudly.
func newEvalCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "eval",
		Short: "Evaluate candidates against a truth file",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("eval: not implemented yet (issue 4)")
		},
	}
}
