// Package clickhouse is ccflow's ClickHouse sink and schema migrator. The
// Writer inserts pseudonymized flows, pair scores and candidates with
// clickhouse-go v2 over the native protocol in batches (by rows and by
// time), retries failed inserts with exponential backoff under a
// deduplication token per block (insert_deduplication_token), so that a
// retried block is stored once, keeps memory bounded, and spills blocks to
// disk while ClickHouse is unavailable. Migrate applies the versioned schema
// of deploy/clickhouse.
package clickhouse
