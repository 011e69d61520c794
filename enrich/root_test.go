package enrich

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/maxmind/mmdbwriter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
)

// fixture builds an Enricher over a small mmdbwriter-built ASN database and
// two intel lists.
func fixture(t testing.TB, set func(*Config)) (*Enricher, *prometheus.Registry) {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig()
	cfg.ASNDB = writeMMDB(t, filepath.Join(dir, "asn.mmdb"), mmdbwriter.Options{}, []mmdbNet{
		{"104.16.0.0/13", asnRec(13335, "Cloudflare, Inc.")},
		{"23.32.0.0/11", asnRec(20940, "Akamai International B.V.")},
		{"3.0.0.0/9", asnRec(16509, "Amazon.com, Inc.")},
		{"51.178.0.0/16", asnRec(16276, "OVH SAS")},
		{"185.100.0.0/16", asnRec(64500, "Bulletproof Hosting Ltd")},
		{"2a00:1450::/32", asnRec(15169, "Google LLC")},
	})
	cfg.Intel = []IntelList{
		{Name: "feodo", File: writeFile(t, dir, "feodo.csv", feodoCSV), Column: "dst_ip"},
		{Name: "local", File: writeFile(t, dir, "local.txt", "51.178.0.0/16\n2001:db8:c2::/48\n")},
	}
	cfg.Providers = []ProviderRule{
		{Class: "cdn", ASNs: []uint32{13335}, OrgContains: []string{"akamai"}},
		{Class: "cloud", ASNs: []uint32{16509}},
		{Class: "hosting", OrgContains: []string{"HOSTING", "ovh"}},
		{Class: "never", ASNs: []uint32{13335, 16276}},
	}
	cfg.Exporters = []Exporter{
		{Addr: "192.0.2.1", Name: "edge1", Interfaces: []Interface{{Index: 10, Name: "xe-0/0/0"}, {Index: 11, Name: "xe-0/0/1"}, {Index: 700000, Name: "ae0.1000"}}},
		{Addr: "2001:db8::1", Name: "edge6"},
	}
	if set != nil {
		set(&cfg)
	}
	reg := prometheus.NewPedanticRegistry()
	return mustNew(t, cfg, Deps{Registerer: reg}), reg
}

func TestEnrichFields(t *testing.T) {
	e, _ := fixture(t, nil)
	// No country database: RemoteCountry stays as it is (see
	// TestUnconfiguredFieldsUntouched).
	stale := flow.Pseudo{RemoteASN: 9, RemoteASOrg: "stale", Provider: "stale", Intel: "stale",
		ExporterName: "stale", InIfName: "stale", OutIfName: "stale"}
	in := func(remote, exporter string, inIf, outIf uint32) flow.Pseudo {
		p := stale
		if remote != "" {
			p.Remote = addr(remote)
		}
		p.Exporter = addr(exporter)
		p.InIf, p.OutIf = inIf, outIf
		p.RemotePort, p.Bytes = 443, 99
		return p
	}
	type names struct{ Exporter, In, Out string }
	tests := []struct {
		name      string
		flow      flow.Pseudo
		want      remoteFields
		wantNames names
	}{
		{"cdn by asn", in("104.16.1.1", "192.0.2.1", 10, 11), remoteFields{ASN: 13335, Org: "Cloudflare, Inc.", Provider: "cdn"}, names{"edge1", "xe-0/0/0", "xe-0/0/1"}},
		{"cdn by org", in("23.40.0.1", "192.0.2.1", 11, 99), remoteFields{ASN: 20940, Org: "Akamai International B.V.", Provider: "cdn"}, names{"edge1", "xe-0/0/1", ""}},
		{"cloud", in("3.1.2.3", "192.0.2.1", 0, 0), remoteFields{ASN: 16509, Org: "Amazon.com, Inc.", Provider: "cloud"}, names{"edge1", "", ""}},
		{"large ifindex", in("3.1.2.3", "192.0.2.1", 700000, 4096), remoteFields{ASN: 16509, Org: "Amazon.com, Inc.", Provider: "cloud"}, names{"edge1", "ae0.1000", ""}},
		{"hosting by org, case-insensitive", in("185.100.1.1", "2001:db8::1", 10, 11), remoteFields{ASN: 64500, Org: "Bulletproof Hosting Ltd", Provider: "hosting"}, names{"edge6", "", ""}},
		{"intel from two lists, config order", in("51.178.161.32", "198.51.100.1", 10, 11), remoteFields{ASN: 16276, Org: "OVH SAS", Provider: "hosting", Intel: "feodo,local"}, names{}},
		{"intel one list", in("51.178.9.9", "192.0.2.1", 10, 11), remoteFields{ASN: 16276, Org: "OVH SAS", Provider: "hosting", Intel: "local"}, names{"edge1", "xe-0/0/0", "xe-0/0/1"}},
		{"intel v6 csv", in("2001:db8:c2::1", "192.0.2.1", 10, 11), remoteFields{Intel: "feodo,local"}, names{"edge1", "xe-0/0/0", "xe-0/0/1"}},
		{"intel no asn", in("162.243.103.246", "192.0.2.1", 10, 11), remoteFields{Intel: "feodo"}, names{"edge1", "xe-0/0/0", "xe-0/0/1"}},
		{"v6 push", in("2a00:1450:4001::1", "192.0.2.1", 10, 11), remoteFields{ASN: 15169, Org: "Google LLC"}, names{"edge1", "xe-0/0/0", "xe-0/0/1"}},
		{"unknown remote", in("192.0.2.200", "192.0.2.1", 10, 11), remoteFields{}, names{"edge1", "xe-0/0/0", "xe-0/0/1"}},
		{"no remote (both subscribers)", in("", "192.0.2.1", 10, 11), remoteFields{}, names{"edge1", "xe-0/0/0", "xe-0/0/1"}},
	}
	// Each flow alone, then all in one batch twice (cache hits).
	var batch []flow.Pseudo
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := []flow.Pseudo{tt.flow}
			e.Enrich(fs)
			check(t, fs[0], tt.flow, tt.want, tt.wantNames)
		})
		batch = append(batch, tt.flow)
	}
	for round := 0; round < 2; round++ {
		fs := append([]flow.Pseudo(nil), batch...)
		e.Enrich(fs)
		for i, tt := range tests {
			check(t, fs[i], tt.flow, tt.want, tt.wantNames)
		}
	}
}

func check(t *testing.T, got, in flow.Pseudo, want remoteFields, wantNames struct{ Exporter, In, Out string }) {
	t.Helper()
	if diff := cmp.Diff(want, fieldsOf(got)); diff != "" {
		t.Errorf("remote %s: (-want +got)\n%s", in.Remote, diff)
	}
	gotNames := struct{ Exporter, In, Out string }{got.ExporterName, got.InIfName, got.OutIfName}
	if diff := cmp.Diff(wantNames, gotNames); diff != "" {
		t.Errorf("names: (-want +got)\n%s", diff)
	}
	// Nothing else changes.
	got.RemoteASN, got.RemoteASOrg, got.RemoteCountry, got.Provider, got.Intel = in.RemoteASN, in.RemoteASOrg, in.RemoteCountry, in.Provider, in.Intel
	got.ExporterName, got.InIfName, got.OutIfName = in.ExporterName, in.InIfName, in.OutIfName
	if got != in {
		t.Errorf("enrichment changed other fields: %+v", got)
	}
}

// TestUnconfiguredFieldsUntouched: Enrich sets only the fields of the
// sources that are configured.
func TestUnconfiguredFieldsUntouched(t *testing.T) {
	dir := t.TempDir()
	in := flow.Pseudo{Remote: addr("198.51.100.7"), Exporter: addr("192.0.2.1"), InIf: 1, OutIf: 2,
		RemoteASN: 64500, RemoteASOrg: "From the collector", RemoteCountry: "DE", Provider: "cloud", Intel: "old",
		ExporterName: "edge1", InIfName: "in", OutIfName: "out"}
	tests := []struct {
		name string
		set  func(*Config)
		want func(*flow.Pseudo)
	}{
		{"nothing configured", func(*Config) {}, func(*flow.Pseudo) {}},
		{"intel only", func(c *Config) {
			c.Intel = []IntelList{{Name: "c2", File: writeFile(t, dir, "c2.txt", "198.51.100.0/24\n")}}
		}, func(p *flow.Pseudo) { p.Intel = "c2" }},
		{"asn only", func(c *Config) {
			c.ASNDB = writeMMDB(t, filepath.Join(dir, "asn.mmdb"), mmdbwriter.Options{}, []mmdbNet{{"198.51.100.0/24", asnRec(64501, "Example")}})
		}, func(p *flow.Pseudo) { p.RemoteASN, p.RemoteASOrg, p.Provider = 64501, "Example", "" }},
		{"exporters only", func(c *Config) {
			c.Exporters = []Exporter{{Addr: "192.0.2.9", Name: "other"}}
		}, func(p *flow.Pseudo) { p.ExporterName, p.InIfName, p.OutIfName = "", "", "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.set(&cfg)
			e := mustNew(t, cfg, Deps{})
			got := []flow.Pseudo{in}
			e.Enrich(got)
			want := in
			tt.want(&want)
			if diff := cmp.Diff(want, got[0]); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestCacheSizes runs the same flows through caches of several sizes
// (off, one set, larger) and a dedicated Worker: the answers must not
// depend on the cache.
func TestCacheSizes(t *testing.T) {
	remotes := []string{"104.16.1.1", "23.40.0.1", "3.1.2.3", "185.100.1.1", "51.178.161.32", "51.178.9.9",
		"2001:db8:c2::1", "162.243.103.246", "2a00:1450:4001::1", "192.0.2.200"}
	ref, _ := fixture(t, func(c *Config) { c.CacheSize = 0 })
	want := make([]flow.Pseudo, 0, 200)
	for i := 0; i < 200; i++ {
		want = append(want, flow.Pseudo{Remote: addr(remotes[(i*7)%len(remotes)])})
	}
	ref.Enrich(want)
	for _, size := range []int{0, 1, 2, 3, 64, 1 << 16} {
		e, _ := fixture(t, func(c *Config) { c.CacheSize = size })
		w := e.NewWorker()
		for round := 0; round < 3; round++ {
			got := make([]flow.Pseudo, len(want))
			for i := range got {
				got[i].Remote = want[i].Remote
			}
			if round == 2 {
				e.Enrich(got)
			} else {
				w.Enrich(got)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("cache size %d round %d: (-want +got)\n%s", size, round, diff)
			}
		}
	}
}

// TestConcurrentEnrich runs Enrich from several goroutines (run with
// -race).
func TestConcurrentEnrich(t *testing.T) {
	e, _ := fixture(t, func(c *Config) { c.CacheSize = 8 })
	remotes := []string{"104.16.1.1", "51.178.161.32", "2001:db8:c2::1", "192.0.2.200", "3.1.2.3"}
	want := map[flow.Addr]remoteFields{}
	for _, r := range remotes {
		want[addr(r)] = fieldsOf(enrichOne(e, addr(r)))
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs := make([]flow.Pseudo, 64)
			for round := 0; round < 200; round++ {
				for i := range fs {
					fs[i] = flow.Pseudo{Remote: addr(remotes[(i+round+g)%len(remotes)])}
				}
				e.Enrich(fs)
				for _, f := range fs {
					if fieldsOf(f) != want[f.Remote] {
						t.Errorf("%s: got %+v, want %+v", f.Remote, fieldsOf(f), want[f.Remote])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestEnrichAllocs(t *testing.T) {
	e, _ := fixture(t, nil)
	fs := make([]flow.Pseudo, 256)
	for i := range fs {
		fs[i] = flow.Pseudo{Remote: addr([]string{"104.16.1.1", "51.178.161.32", "2001:db8:c2::1", "192.0.2.200"}[i%4]),
			Exporter: addr("192.0.2.1"), InIf: 10, OutIf: 11}
	}
	w := e.NewWorker()
	w.Enrich(fs)
	if n := testing.AllocsPerRun(100, func() { w.Enrich(fs) }); n != 0 {
		t.Errorf("Worker.Enrich allocates %v times per batch in steady state", n)
	}
	if raceEnabled {
		return
	}
	e.Enrich(fs)
	if n := testing.AllocsPerRun(100, func() { e.Enrich(fs) }); n != 0 {
		t.Errorf("Enricher.Enrich allocates %v times per batch in steady state", n)
	}
}

func TestMetrics(t *testing.T) {
	e, reg := fixture(t, nil)
	fs := []flow.Pseudo{
		{Remote: addr("51.178.161.32")}, {Remote: addr("51.178.161.32")}, {Remote: addr("104.16.1.1")}, {},
	}
	w := e.NewWorker()
	w.Enrich(fs)
	const want = `
# HELP ccflow_enrich_cache_hits_total Remote-address lookups answered by a worker cache.
# TYPE ccflow_enrich_cache_hits_total counter
ccflow_enrich_cache_hits_total 1
# HELP ccflow_enrich_cache_misses_total Remote-address lookups that went to the sources.
# TYPE ccflow_enrich_cache_misses_total counter
ccflow_enrich_cache_misses_total 2
# HELP ccflow_enrich_flows_total Flows enriched.
# TYPE ccflow_enrich_flows_total counter
ccflow_enrich_flows_total 4
# HELP ccflow_enrich_intel_matches_total Flows whose remote address is on at least one intel list.
# TYPE ccflow_enrich_intel_matches_total counter
ccflow_enrich_intel_matches_total 2
# HELP ccflow_enrich_lookups_total Remote-address lookups (flows with a remote address).
# TYPE ccflow_enrich_lookups_total counter
ccflow_enrich_lookups_total 3
# HELP ccflow_enrich_reloads_total Successful loads of a source, the first one included.
# TYPE ccflow_enrich_reloads_total counter
ccflow_enrich_reloads_total{source="asn_db"} 1
ccflow_enrich_reloads_total{source="intel/feodo"} 1
ccflow_enrich_reloads_total{source="intel/local"} 1
# HELP ccflow_enrich_source_entries Entries in a loaded source: prefixes of an intel list, networks of an MMDB file.
# TYPE ccflow_enrich_source_entries gauge
ccflow_enrich_source_entries{source="intel/feodo"} 3
ccflow_enrich_source_entries{source="intel/local"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"ccflow_enrich_cache_hits_total", "ccflow_enrich_cache_misses_total", "ccflow_enrich_flows_total",
		"ccflow_enrich_intel_matches_total", "ccflow_enrich_lookups_total", "ccflow_enrich_reloads_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(e.m.entries.WithLabelValues("asn_db")); got != 6 {
		t.Errorf("asn_db entries = %v, want 6 networks", got)
	}
	if got := testutil.ToFloat64(e.m.entries.WithLabelValues("intel/feodo")); got != 3 {
		t.Errorf("intel/feodo entries = %v, want 3", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

func TestLifecycle(t *testing.T) {
	var logs bytes.Buffer
	e, err := New(testConfig(), Deps{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(); err != nil { // before Start
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop: %v, want ErrStopped", err)
	}
	e2, _ := fixture(t, func(c *Config) { c.Watch = true })
	if err := e2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e2.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v, want ErrStarted", err)
	}
	for i := 0; i < 2; i++ {
		if err := e2.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	// Enrich still works after Stop.
	if got := enrichOne(e2, addr("104.16.1.1")); got.RemoteASN != 13335 {
		t.Errorf("after Stop: %+v", fieldsOf(got))
	}
	// A context cancel also ends the watcher.
	e3, _ := fixture(t, func(c *Config) { c.Watch = true })
	ctx, cancel := context.WithCancel(context.Background())
	if err := e3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-e3.done
}
