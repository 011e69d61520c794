// Package clickhouse embeds ccflow's ClickHouse schema: the numbered SQL
// migrations in this directory, applied in name order by `ccflow migrate`
// (the logic lives in sink/clickhouse). The package holds no logic: go:embed
// cannot reach parent directories, so this file is the only Go file in
// deploy/.
package clickhouse

import "embed"

// Migrations holds the migration files NNN_name.sql. Each file is a text/template
// (see sink/clickhouse for the functions it may call) holding one or more
// statements, each ending with a semicolon at the end of a line.
//
//go:embed *.sql
var Migrations embed.FS
