package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newDetectCmd is a placeholder until issue 5 lands; it fails loudly.
func newDetectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "detect",
		Short: "Consume flows from the bus and detect C&C candidates",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("detect: not implemented yet (issue 5)")
		},
	}
}
