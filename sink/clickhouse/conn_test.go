package clickhouse

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("from-file\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		mod        func(*Config)
		user, pass string
		tls        bool
	}{
		{"dsn", func(c *Config) {}, "dsnuser", "dsnpass", false},
		{"config overrides dsn", func(c *Config) { c.Username, c.Password = "u", "p" }, "u", "p", false},
		{"password file wins", func(c *Config) { c.Password, c.PasswordFile = "p", pw }, "dsnuser", "from-file", false},
		{"tls from config", func(c *Config) { c.TLS.Enable = true; c.TLS.ServerName = "ch.example" }, "dsnuser", "dsnpass", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.DSN = "clickhouse://dsnuser:dsnpass@127.0.0.1:9000/ccflow"
			tc.mod(&c)
			o, err := Options(c)
			if err != nil {
				t.Fatal(err)
			}
			if o.Auth.Username != tc.user || o.Auth.Password != tc.pass || o.Auth.Database != "ccflow" {
				t.Errorf("auth = %q/%q db %q, want %q/%q db ccflow", o.Auth.Username, o.Auth.Password, o.Auth.Database, tc.user, tc.pass)
			}
			if (o.TLS != nil) != tc.tls {
				t.Errorf("TLS = %v, want %v", o.TLS != nil, tc.tls)
			}
		})
	}
	c := DefaultConfig()
	if _, err := Options(c); !errors.Is(err, ErrNoDSN) {
		t.Errorf("no DSN: %v", err)
	}
	c.DSN = "clickhouse://u:secret@[bad"
	if _, err := Options(c); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad DSN error %v must not echo the password", err)
	}
	c.DSN = "clickhouse://127.0.0.1:9000/x"
	c.TLS.CAFile = filepath.Join(dir, "missing.pem")
	if _, err := Options(c); err == nil {
		t.Error("missing CA file accepted")
	}
}
