package clickhouse

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	schema "github.com/ccflow/ccflow/deploy/clickhouse"
)

// MigrationsTable records the applied migrations.
const MigrationsTable = "ccflow_schema_migrations"

// Migration is one versioned step of the schema: a file NNN_name.sql of
// deploy/clickhouse rendered with the configuration.
type Migration struct {
	// Version is the file's number; Name is the file name without ".sql".
	Version int
	Name    string
	// Checksum is the SHA-256 of the file before rendering, so that a
	// change of TTL in the configuration is not mistaken for an edited
	// migration.
	Checksum string
	// Statements are the rendered statements, without their semicolons.
	Statements []string
}

// SchemaParams are the configurable parts of the schema.
type SchemaParams struct {
	// FlowsTTL and PairsTTL are the retention of flows (and the hourly
	// rollup) and of beacon_pairs; 0 keeps rows for ever.
	FlowsTTL time.Duration
	PairsTTL time.Duration
}

// Params returns the schema parameters of c.
func (c Config) Params() SchemaParams {
	return SchemaParams{FlowsTTL: c.FlowsTTL, PairsTTL: c.PairsTTL}
}

// ttlClause renders a TTL clause for expr (a DateTime expression), or
// nothing when d is 0.
func ttlClause(expr string, d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf("TTL %s + INTERVAL %d SECOND", expr, int64(d/time.Second))
}

// Migrations renders the embedded migrations with p, in version order.
func Migrations(p SchemaParams) ([]Migration, error) { return migrationsFrom(schema.Migrations, p) }

func migrationsFrom(fsys fs.FS, p SchemaParams) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Migration
	seen := map[int]string{}
	for _, name := range names {
		base := strings.TrimSuffix(path.Base(name), ".sql")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNN_name.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		raw, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		tmpl, err := template.New(name).Funcs(template.FuncMap{"ttl": ttlClause}).Option("missingkey=error").Parse(string(raw))
		if err != nil {
			return nil, fmt.Errorf("parse migration %s: %w", name, err)
		}
		var b bytes.Buffer
		if err := tmpl.Execute(&b, p); err != nil {
			return nil, fmt.Errorf("render migration %s: %w", name, err)
		}
		sum := sha256.Sum256(raw)
		stmts := SplitStatements(b.String())
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s has no statement", name)
		}
		out = append(out, Migration{Version: v, Name: base, Checksum: hex.EncodeToString(sum[:]), Statements: stmts})
	}
	return out, nil
}

// SplitStatements splits SQL text into statements. A statement ends with a
// semicolon at the end of a line; lines that hold only a "--" comment
// before a statement's first line are dropped, and so are empty statements.
func SplitStatements(sql string) []string {
	var out []string
	var cur []string
	flush := func() {
		s := strings.TrimSpace(strings.Join(cur, "\n"))
		s = strings.TrimSpace(strings.TrimSuffix(s, ";"))
		if s != "" {
			out = append(out, s)
		}
		cur = cur[:0]
	}
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if len(cur) == 0 && (t == "" || strings.HasPrefix(t, "--")) {
			continue
		}
		if t == "" {
			continue // blank lines inside a statement (an empty TTL clause)
		}
		cur = append(cur, strings.TrimRight(line, " \t\r"))
		if strings.HasSuffix(t, ";") {
			flush()
		}
	}
	flush()
	return out
}

// Print writes the migrations as one SQL script: a comment naming each
// migration, then its statements, each ending with a semicolon.
func Print(w io.Writer, migs []Migration) error {
	var b strings.Builder
	for _, m := range migs {
		fmt.Fprintf(&b, "-- migration %s (version %d, sha256 %s)\n", m.Name, m.Version, m.Checksum[:12])
		for _, s := range m.Statements {
			b.WriteString(s)
			b.WriteString(";\n\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Migrate applies the migrations that conn's database has not recorded in
// MigrationsTable yet, in version order, and records each after its
// statements succeed. Every statement is idempotent (IF NOT EXISTS), so a
// migration interrupted half-way is simply applied again. A recorded
// migration whose file has changed since is reported with a warning, not
// re-applied. Migrate returns the migrations it applied.
func Migrate(ctx context.Context, conn driver.Conn, migs []Migration, log *slog.Logger) ([]Migration, error) {
	if err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+MigrationsTable+` (
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY version`); err != nil {
		return nil, fmt.Errorf("create %s: %w", MigrationsTable, err)
	}
	rows, err := conn.Query(ctx, "SELECT version, checksum FROM "+MigrationsTable)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
	}
	applied := map[int]string{}
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
		}
		applied[int(v)] = sum
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
	}
	var done []Migration
	for _, m := range migs {
		if sum, ok := applied[m.Version]; ok {
			if sum != m.Checksum {
				log.Warn("applied migration changed since", "migration", m.Name)
			}
			continue
		}
		for i, s := range m.Statements {
			if err := conn.Exec(ctx, s); err != nil {
				return done, fmt.Errorf("apply migration %s statement %d: %w", m.Name, i+1, err)
			}
		}
		if err := conn.Exec(ctx, "INSERT INTO "+MigrationsTable+" (version, name, checksum, applied_at) VALUES (?, ?, ?, now64(3))",
			uint32(m.Version), m.Name, m.Checksum); err != nil {
			return done, fmt.Errorf("record migration %s: %w", m.Name, err)
		}
		log.Info("applied migration", "migration", m.Name)
		done = append(done, m)
	}
	return done, nil
}
