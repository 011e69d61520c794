package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newReplayCmd is a placeholder until issue 4 lands; it fails loudly.
func newReplayCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "replay",
		Short: "Replay flow archives through privacy and the detector",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("replay: not implemented yet (issue 4)")
		},
	}
}
