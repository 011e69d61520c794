package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newRunCmd is a placeholder until issue 7 lands; it fails loudly.
func newRunCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Collector, privacy, enrichment, detector and sinks in one process",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("run: not implemented yet (issue 7)")
		},
	}
}
