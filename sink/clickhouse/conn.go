package clickhouse

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ErrNoDSN is returned when a server is needed and no DSN is configured.
var ErrNoDSN = errors.New("no ClickHouse DSN configured (sink.clickhouse.dsn, CCFLOW_SINK_CLICKHOUSE_DSN or --clickhouse-dsn)")

// Options turns the configuration into clickhouse-go options: the DSN,
// then the username, password (or password file) and TLS settings, which
// override the DSN's. It reads the password and certificate files.
func Options(c Config) (*clickhouse.Options, error) {
	if c.DSN == "" {
		return nil, ErrNoDSN
	}
	opts, err := clickhouse.ParseDSN(c.DSN)
	if err != nil {
		// The DSN may hold a password: do not echo it.
		return nil, errors.New("parse ClickHouse DSN: invalid DSN")
	}
	if c.Username != "" {
		opts.Auth.Username = c.Username
	}
	if c.Password != "" {
		opts.Auth.Password = c.Password
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read password file: %w", err)
		}
		opts.Auth.Password = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	}
	t := c.TLS
	if t.Enable || t.CAFile != "" || t.CertFile != "" || t.ServerName != "" || t.InsecureSkipVerify {
		if opts.TLS == nil {
			opts.TLS = &tls.Config{}
		}
		opts.TLS.MinVersion = tls.VersionTLS12
		opts.TLS.ServerName = t.ServerName
		opts.TLS.InsecureSkipVerify = t.InsecureSkipVerify // #nosec G402 -- documented as tests only
		if t.CAFile != "" {
			pem, err := os.ReadFile(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", t.CAFile)
			}
			opts.TLS.RootCAs = pool
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load client certificate: %w", err)
			}
			opts.TLS.Certificates = []tls.Certificate{cert}
		}
	}
	if opts.DialTimeout == 0 || opts.DialTimeout > c.InsertTimeout {
		opts.DialTimeout = c.InsertTimeout
	}
	return opts, nil
}

// Open connects to the configured server and pings it.
func Open(ctx context.Context, c Config) (driver.Conn, error) {
	opts, err := Options(c)
	if err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open ClickHouse connection: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ping ClickHouse at %s: %w", strings.Join(opts.Addr, ","), err)
	}
	return conn, nil
}
