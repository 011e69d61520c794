package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newCollectCmd is a placeholder until issue 2 lands; it fails loudly.
func newCollectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "collect",
		Short: "Receive NetFlow/IPFIX/sFlow, pseudonymize and publish flows",
		RunE: func(*cobra.Command, []string) error {
			return errors.New("collect: not implemented yet (issue 2)")
		},
	}
}
