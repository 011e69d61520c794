package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check, print and document the configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the configuration (--config FILE, CCFLOW_* variables) and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Flags().Set("check", "true")
			_, _, err := loadConfig(cmd)
			return err
		},
	}, &cobra.Command{
		Use:   "dump",
		Short: "Print the effective configuration as YAML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Flags().Set("dump", "true")
			_, _, err := loadConfig(cmd)
			return err
		},
	}, &cobra.Command{
		Use:   "sample",
		Short: "Print a sample configuration with every key documented and set to its default",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := DefaultConfig()
			fmt.Fprintln(cmd.OutOrStdout(), "# ccflow configuration. Every key is shown with its default value.")
			fmt.Fprintln(cmd.OutOrStdout(), "# Keys can also be set by CCFLOW_<KEY> variables (dots become _) and by flags.")
			fmt.Fprintln(cmd.OutOrStdout())
			_, err := cmd.OutOrStdout().Write(config.Dump(&cfg, true))
			return err
		},
	}, &cobra.Command{
		Use:   "reference",
		Short: "Print the configuration reference as a Markdown table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := DefaultConfig()
			_, err := fmt.Fprint(cmd.OutOrStdout(), config.Reference(&cfg, envPrefix))
			return err
		},
	})
	return cmd
}
