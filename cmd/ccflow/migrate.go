package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/ccflow/ccflow/sink/clickhouse"
)

// newMigrateCmd builds `ccflow migrate`: apply the ClickHouse schema of
// deploy/clickhouse, or print it.
func newMigrateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse schema (or print it with --print)",
		Long: `migrate applies the versioned ClickHouse schema embedded in the binary
(deploy/clickhouse/NNN_name.sql) to the database named by the DSN: the tables
flows, beacon_pairs, cc_candidates and the hourly rollup remote_hourly with
its materialized view. Applied versions are recorded in
ccflow_schema_migrations, so running migrate again is harmless. The TTLs come
from sink.clickhouse.flows_ttl and pairs_ttl.

--print writes the rendered schema as a SQL script and connects to nothing.`,
		Example: `  ccflow migrate --clickhouse-dsn clickhouse://ccflow@127.0.0.1:9000/ccflow
  ccflow migrate --print > schema.sql`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, done, err := loadConfig(cmd)
			if err != nil || done {
				return err
			}
			print, _ := cmd.Flags().GetBool("print")
			log := newLogger(os.Stderr, cfg.Log, nil)
			return runMigrate(cmd.Context(), cmd.OutOrStdout(), cfg.Sink.ClickHouse, print, log)
		},
	}
	bindFlag(cmd.Flags(), "clickhouse-dsn", "sink.clickhouse.dsn", "ClickHouse `DSN` (clickhouse://user@host:9000/db)")
	cmd.Flags().Bool("print", false, "print the schema as SQL instead of applying it")
	return cmd
}

// runMigrate prints or applies the schema.
func runMigrate(ctx context.Context, out io.Writer, cfg clickhouse.Config, print bool, log *slog.Logger) error {
	migs, err := clickhouse.Migrations(cfg.Params())
	if err != nil {
		return err
	}
	if print {
		return clickhouse.Print(out, migs)
	}
	conn, err := clickhouse.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	done, err := clickhouse.Migrate(ctx, conn, migs, log.With("stage", "migrate"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "schema up to date: %d migration(s) applied now, %d known\n", len(done), len(migs))
	return nil
}
