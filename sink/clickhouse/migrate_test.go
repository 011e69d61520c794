package clickhouse

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultConfigValidates(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default configuration does not validate: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		key  string
	}{
		{"bad dsn", func(c *Config) { c.DSN = "://nope" }, "dsn"},
		{"short ttl", func(c *Config) { c.FlowsTTL = time.Minute }, "flows_ttl"},
		{"batch above memory", func(c *Config) { c.MaxBufferedRows = c.BatchRows - 1 }, "max_buffered_rows"},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "x.pem" }, "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.key+":") {
				t.Fatalf("Validate() = %v, want an error on %s", err, tc.key)
			}
		})
	}
}

func TestSplitStatements(t *testing.T) {
	in := "-- leading comment\nCREATE TABLE a\n(\n    x UInt8 -- inline\n)\n\nENGINE = Memory;\n\n-- between\nCREATE VIEW v AS\nSELECT 1;\n-- trailing\n"
	want := []string{"CREATE TABLE a\n(\n    x UInt8 -- inline\n)\nENGINE = Memory", "CREATE VIEW v AS\nSELECT 1"}
	if diff := cmp.Diff(SplitStatements(in), want); diff != "" {
		t.Errorf("SplitStatements (-got +want):\n%s", diff)
	}
}

func TestMigrationsRender(t *testing.T) {
	migs, err := Migrations(SchemaParams{FlowsTTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, m := range migs {
		names = append(names, m.Name)
		if m.Version != i+1 {
			t.Errorf("migration %s has version %d, want %d", m.Name, m.Version, i+1)
		}
		for _, s := range m.Statements {
			if !strings.Contains(s, "IF NOT EXISTS") {
				t.Errorf("migration %s: statement is not idempotent:\n%s", m.Name, s)
			}
			if strings.Contains(s, "{{") {
				t.Errorf("migration %s: template not rendered:\n%s", m.Name, s)
			}
		}
	}
	if diff := cmp.Diff(names, []string{"001_flows", "002_beacon_pairs", "003_cc_candidates", "004_remote_hourly", "005_beacon_pairs_evidence"}); diff != "" {
		t.Errorf("migrations (-got +want):\n%s", diff)
	}
	if s := migs[0].Statements[0]; !strings.Contains(s, "TTL toDateTime(time_start) + INTERVAL 172800 SECOND") {
		t.Errorf("flows TTL not rendered:\n%s", s)
	}
	if s := migs[1].Statements[0]; strings.Contains(s, "TTL") {
		t.Errorf("beacon_pairs has a TTL although PairsTTL is 0:\n%s", s)
	}
	// A TTL change does not change the checksum (no false drift warning).
	again, err := Migrations(SchemaParams{FlowsTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Checksum != migs[0].Checksum {
		t.Error("checksum depends on the TTL")
	}
}

func TestMigrationsRejectBadNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no number": {"flows.sql": {Data: []byte("SELECT 1;")}},
		"duplicate": {"001_a.sql": {Data: []byte("SELECT 1;")}, "01_b.sql": {Data: []byte("SELECT 1;")}},
		"empty":     {"001_a.sql": {Data: []byte("-- nothing\n")}},
	} {
		if _, err := migrationsFrom(fsys, SchemaParams{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
