package clickhouse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/go-cmp/cmp"

	"github.com/ccflow/ccflow/flow"
	"github.com/ccflow/ccflow/sink/sinktest"
	"github.com/ccflow/ccflow/sink/table"
)

// This file tests the sink against a real ClickHouse server named by
// CCFLOW_TEST_CLICKHOUSE: HOST:PORT of its native protocol port, or a
// clickhouse:// DSN (user, password, secure=true...). When the variable is
// unset the tests skip, in CI too: no ClickHouse server that clickhouse-go
// v2 supports can be installed from this project's package registries
// (docs/storage.md has the evidence). When it is set and the server is
// unreachable, they fail.

// testServer returns a DSN for a fresh database on the test server, and
// the server's address. The database is dropped at cleanup.
func testServer(t testing.TB) (dsn, addr string) {
	t.Helper()
	v := os.Getenv("CCFLOW_TEST_CLICKHOUSE")
	if v == "" {
		t.Skip("CCFLOW_TEST_CLICKHOUSE is not set (no installable ClickHouse server here: see docs/storage.md)")
	}
	base := v
	if !strings.Contains(v, "://") {
		base = "clickhouse://" + v + "/default"
	}
	cfg := DefaultConfig()
	cfg.DSN = base
	opts, err := Options(cfg)
	if err != nil {
		t.Fatalf("CCFLOW_TEST_CLICKHOUSE: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("CCFLOW_TEST_CLICKHOUSE=%s is unreachable: %v", v, err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	db := "ccflow_test_" + hex.EncodeToString(rnd[:])
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		_ = conn.Close()
	})
	u := strings.Replace(base, "/"+opts.Auth.Database, "/"+db, 1)
	if opts.Auth.Database == "" || !strings.Contains(base, "/"+opts.Auth.Database) {
		sep := "?"
		if strings.Contains(base, "?") {
			sep = "&"
		}
		u = base + sep + "database=" + db
	}
	return u, opts.Addr[0]
}

// proxy forwards TCP connections to a server and can cut them all, to
// simulate the server going down and coming back at the same address.
type proxy struct {
	t      testing.TB
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

func newProxy(t testing.TB, target string) *proxy {
	p := &proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
			go func() { _, _ = io.Copy(c, s); _ = c.Close() }()
		}
	}()
}

// down closes the listener and every connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// up listens again on the same address.
func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

func viaProxy(dsn, serverAddr, proxyAddr string) string {
	return strings.Replace(dsn, serverAddr, proxyAddr, 1)
}

func count(t testing.TB, conn driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestServerMigrateAndWrite(t *testing.T) {
	dsn, addr := testServer(t)
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.DSN = dsn
	conn, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	migs, err := Migrations(cfg.Params())
	if err != nil {
		t.Fatal(err)
	}
	done, err := Migrate(ctx, conn, migs, discard())
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != len(migs) {
		t.Errorf("first migrate applied %d of %d", len(done), len(migs))
	}
	if done, err = Migrate(ctx, conn, migs, discard()); err != nil || len(done) != 0 {
		t.Errorf("second migrate applied %d (err %v), want 0", len(done), err)
	}
	for tbl, cols := range table.Columns {
		rows, err := conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = ? ORDER BY position", tbl)
		if err != nil {
			t.Fatal(err)
		}
		var got []table.Column
		for rows.Next() {
			var c table.Column
			if err := rows.Scan(&c.Name, &c.Type); err != nil {
				t.Fatal(err)
			}
			got = append(got, c)
		}
		rows.Close()
		if diff := cmp.Diff(got, cols); diff != "" {
			t.Errorf("table %s columns (-server +sink):\n%s", tbl, diff)
		}
	}

	// Write through a proxy that goes down for a while.
	p := newProxy(t, addr)
	wcfg := cfg
	wcfg.DSN = viaProxy(dsn, addr, p.addr)
	wcfg.BatchRows = 2000
	wcfg.BatchInterval = 100 * time.Millisecond
	wcfg.MaxBufferedRows = 8000
	wcfg.SpillDir = t.TempDir()
	wcfg.RetryInitial = 20 * time.Millisecond
	wcfg.RetryMax = 200 * time.Millisecond
	wcfg.InsertTimeout = 5 * time.Second
	w, err := New(wcfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Hour)
	batches := sinktest.Flows(0, 30000, 500, t0)
	write := func(bs []flow.Batch) {
		for _, b := range bs {
			if err := w.WriteFlows(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(batches[:20])
	p.down()
	write(batches[20:50])
	time.Sleep(500 * time.Millisecond)
	p.up()
	write(batches[50:])
	if err := w.WritePairs(ctx, sinktest.Pairs(50, t0)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteCandidates(ctx, sinktest.Candidates(25, t0)); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, "SELECT count() FROM flows"); n != 30000 {
		t.Errorf("%d flows stored, want 30000", n)
	}
	if n := count(t, conn, "SELECT uniqExact(batch_id, bytes) FROM flows"); n != 30000 {
		t.Errorf("%d distinct flows stored, want 30000", n)
	}
	if n := count(t, conn, "SELECT count() FROM beacon_pairs"); n != 50 {
		t.Errorf("%d pairs stored, want 50", n)
	}
	if n := count(t, conn, "SELECT count() FROM cc_candidates"); n != 25 {
		t.Errorf("%d candidates stored, want 25", n)
	}
	if n := count(t, conn, "SELECT toUInt64(sum(flows)) FROM remote_hourly"); n != count(t, conn, "SELECT count() FROM flows WHERE kind = 'subscriber'") {
		t.Errorf("rollup holds %d flows, table %d", n, count(t, conn, "SELECT count() FROM flows WHERE kind = 'subscriber'"))
	}
}

// BenchmarkServerInsert measures rows/s into the test server.
func BenchmarkServerInsert(b *testing.B) {
	dsn, _ := testServer(b)
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.DSN = dsn
	conn, err := Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	migs, _ := Migrations(cfg.Params())
	if _, err := Migrate(ctx, conn, migs, discard()); err != nil {
		b.Fatal(err)
	}
	batches := sinktest.Flows(0, 100_000, 1000, time.Now().UTC())
	ins := NewConnInserter(conn)
	b.ResetTimer()
	rows := 0
	for i := 0; i < b.N; i++ {
		blk := &Block{Table: table.Flows, Token: hex.EncodeToString([]byte{byte(i), byte(i >> 8), byte(i >> 16)}) + "-bench"}
		for _, bt := range batches {
			blk.Flows = append(blk.Flows, bt.Flows...)
			blk.FlowIDs = append(blk.FlowIDs, IDRun{ID: bt.ID, N: len(bt.Flows)})
		}
		if err := ins.Insert(ctx, blk); err != nil {
			b.Fatal(err)
		}
		rows += blk.Rows()
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
