package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestMigratePrint(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"migrate", "--print"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"-- migration 001_flows", "CREATE TABLE IF NOT EXISTS flows", "PARTITION BY toDate(time_start)",
		"TTL toDateTime(time_start) + INTERVAL 2592000 SECOND", "CREATE TABLE IF NOT EXISTS beacon_pairs",
		"CREATE TABLE IF NOT EXISTS cc_candidates", "CREATE MATERIALIZED VIEW IF NOT EXISTS remote_hourly_mv TO remote_hourly",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("migrate --print lacks %q", want)
		}
	}
}

func TestMigrateNeedsDSN(t *testing.T) {
	t.Setenv("CCFLOW_SINK_CLICKHOUSE_DSN", "")
	cmd := newRootCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"migrate"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "no ClickHouse DSN") {
		t.Fatalf("migrate without DSN = %v", err)
	}
}
