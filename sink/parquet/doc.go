// Package parquet is ccflow's default sink: Parquet files (Arrow → Parquet
// with pqarrow, zstd by default) in Hive-style partitions
// DIR/TABLE/date=YYYY-MM-DD/*.parquet for the tables flows, beacon_pairs and
// cc_candidates, with the column names of the ClickHouse tables. A file is
// built in memory, then written under a temporary name, synced and renamed,
// so a file appears whole or not at all; a write that fails (unwritable
// directory, full disk) keeps the file in memory and is retried, within a
// memory bound, so no row is lost or written twice. ReadFlows reads the
// flows table back into batches.
package parquet
