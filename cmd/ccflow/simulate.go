package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newSimulateCmd is a placeholder until issue 7 lands; it fails loudly.
func newSimulateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "simulate",
		Short: "Simulate an ISP's flow export",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("simulate: not implemented yet (issue 7)")
		},
	}
}
