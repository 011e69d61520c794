// Command ccflow is the one binary of ccflow, a privacy-preserving flow
// analysis pipeline that finds botnet command-and-control servers in an ISP's
// flow telemetry. Each subcommand lives in a file of its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "ccflow:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "ccflow:", err)
		os.Exit(1)
	}
}

// exitError ends the program with a specific exit code.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ccflow",
		Short: "Find botnet C&C servers in ISP flow telemetry without storing who subscribers are",
		Long: `ccflow collects NetFlow v5/v9, IPFIX and sFlow, replaces subscriber addresses with
keyed pseudonyms before anything is stored, and scores beaconing and fan-in into
command-and-control candidates.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addGlobalFlags(root)
	root.AddCommand(
		newCollectCmd(),
		newDetectCmd(),
		newRunCmd(),
		newReplayCmd(),
		newEvalCmd(),
		newKeygenCmd(),
		newKeysCmd(),
		newRevealCmd(),
		newAuditCmd(),
		newMigrateCmd(),
		newSimulateCmd(),
		newConfigCmd(),
		newVersionCmd(),
	)
	return root
}
