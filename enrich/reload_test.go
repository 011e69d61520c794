package enrich

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ccflow/ccflow/flow"
)

// listVersion is one content of the "c2" intel list in the reload tests.
type listVersion struct {
	text   string
	listed map[flow.Addr]bool
}

func makeVersion(addrs []string) listVersion {
	v := listVersion{listed: map[flow.Addr]bool{}}
	var b strings.Builder
	b.WriteString("# c2 list\n")
	for _, a := range addrs {
		b.WriteString(a + "\n")
		v.listed[addr(a)] = true
	}
	v.text = b.String()
	return v
}

// TestReloadWhileStreaming replaces the intel list again and again while
// five goroutines (four through Enricher.Enrich, one through its own
// Worker) stream batches. Every flow of every batch must be enriched from
// one consistent version of the list, none may be lost, and a batch that
// starts after Reload returned must see the new list.
func TestReloadWhileStreaming(t *testing.T) {
	var remotes, oldAddrs, newAddrs []string
	for i := 0; i < 40; i++ {
		a4 := fmt.Sprintf("198.51.100.%d", i)
		a6 := fmt.Sprintf("2001:db8:c2::%x", i)
		remotes = append(remotes, a4, a6)
		switch i % 4 {
		case 0:
			oldAddrs = append(oldAddrs, a4, a6)
		case 1:
			newAddrs = append(newAddrs, a4, a6)
		case 2:
			oldAddrs = append(oldAddrs, a4)
			newAddrs = append(newAddrs, a4)
		}
	}
	versions := []listVersion{makeVersion(oldAddrs), makeVersion(newAddrs)}

	dir := t.TempDir()
	list := writeFile(t, dir, "c2.txt", versions[0].text)
	cfg := testConfig()
	cfg.CacheSize = 64 // smaller than the address set: hits and misses
	cfg.Intel = []IntelList{{Name: "c2", File: list}}
	reg := prometheus.NewPedanticRegistry()
	e := mustNew(t, cfg, Deps{Registerer: reg})

	// current is the index of the last Reload that returned, started the
	// index of the last Reload begun. A batch that reads current k before
	// it starts, and still reads started k when it is done, ran wholly
	// between Reload k and Reload k+1: it must see version k%2. (Checking
	// current instead of started after the batch would blame a batch that
	// saw Reload k+1's list before the main goroutine stored k+1.)
	var current, started atomic.Int32
	var stop atomic.Bool
	var sent, checked atomic.Int64
	const batch = 50
	fail := make(chan string, 1)
	report := func(s string) {
		select {
		case fail <- s:
		default:
		}
		stop.Store(true)
	}
	var wg sync.WaitGroup
	for g := 0; g < 5; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := e.NewWorker()
			fs := make([]flow.Pseudo, batch)
			for n := 0; !stop.Load(); n++ {
				for i := range fs {
					fs[i] = flow.Pseudo{Remote: addr(remotes[(n*batch+i+g)%len(remotes)]), RemotePort: uint16(i), Bytes: uint64(n)}
				}
				before := current.Load()
				sent.Add(batch)
				if g == 0 {
					w.Enrich(fs)
				} else {
					e.Enrich(fs)
				}
				// Which version enriched this batch?
				seen := -1
				for v := range versions {
					ok := true
					for i, f := range fs {
						want := ""
						if versions[v].listed[f.Remote] {
							want = "c2"
						}
						if f.Intel != want || f.RemotePort != uint16(i) || f.Bytes != uint64(n) {
							ok = false
							break
						}
					}
					if ok {
						seen = v
						break
					}
				}
				if seen < 0 {
					report(fmt.Sprintf("goroutine %d batch %d matches no single list version", g, n))
					return
				}
				// Versions alternate; after Reload k returned, a new
				// batch must not see an older version.
				if int32(seen) != before%2 && started.Load() == before {
					report(fmt.Sprintf("goroutine %d batch %d saw version %d after reload to %d", g, n, seen, before%2))
					return
				}
				checked.Add(batch)
			}
		}()
	}
	reloads := 0
	for k := 1; k <= 20; k++ {
		time.Sleep(5 * time.Millisecond)
		started.Store(int32(k))
		replaceFile(t, list, versions[k%2].text)
		if err := e.Reload(); err != nil {
			t.Fatal(err)
		}
		current.Store(int32(k))
		reloads++
	}
	time.Sleep(5 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	select {
	case s := <-fail:
		t.Fatal(s)
	default:
	}
	if sent.Load() != checked.Load() {
		t.Errorf("sent %d flows, %d came back fully enriched", sent.Load(), checked.Load())
	}
	if got := testutil.ToFloat64(e.m.flows); int64(got) != sent.Load() {
		t.Errorf("flows_total = %v, want %d", got, sent.Load())
	}
	if got := testutil.ToFloat64(e.m.reloads.WithLabelValues("intel/c2")); got != float64(reloads+1) {
		t.Errorf("reloads_total = %v, want %d", got, reloads+1)
	}
	t.Logf("%d flows in batches of %d across %d reloads", sent.Load(), batch, reloads)
}

// TestReloadErrorKeepsOldData: a source that fails to reload keeps its
// data and is counted; the sources that load are replaced.
func TestReloadErrorKeepsOldData(t *testing.T) {
	dir := t.TempDir()
	asnDB := writeMMDB(t, filepath.Join(dir, "asn.mmdb"), mmdbwriter.Options{}, []mmdbNet{{"198.51.100.0/24", asnRec(64501, "Old AS")}})
	a := writeFile(t, dir, "a.txt", "198.51.100.1\n")
	b := writeFile(t, dir, "b.txt", "198.51.100.2\n")
	cfg := testConfig()
	cfg.ASNDB = asnDB
	cfg.Intel = []IntelList{{Name: "a", File: a}, {Name: "b", File: b}}
	e := mustNew(t, cfg, Deps{Registerer: prometheus.NewPedanticRegistry()})

	replaceFile(t, a, "198.51.100.1\nnot-an-address\n")
	replaceFile(t, b, "198.51.100.1\n198.51.100.3\n")
	if err := os.Remove(asnDB); err != nil {
		t.Fatal(err)
	}
	err := e.Reload()
	if err == nil {
		t.Fatal("Reload succeeded with a corrupt list and a missing database")
	}
	for _, w := range []string{"enrich.intel[0] (a): " + a, `line 2: "not-an-address"`, "enrich.asn_db: " + asnDB, "no such file"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	for _, tt := range []struct {
		addr string
		want remoteFields
	}{
		{"198.51.100.1", remoteFields{ASN: 64501, Org: "Old AS", Intel: "a,b"}}, // a kept, b new
		{"198.51.100.2", remoteFields{ASN: 64501, Org: "Old AS"}},               // b no longer lists it
		{"198.51.100.3", remoteFields{ASN: 64501, Org: "Old AS", Intel: "b"}},
	} {
		if got := fieldsOf(enrichOne(e, addr(tt.addr))); got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.addr, got, tt.want)
		}
	}
	for src, want := range map[string]float64{"intel/a": 1, "intel/b": 0, "asn_db": 1} {
		if got := testutil.ToFloat64(e.m.reloadErrors.WithLabelValues(src)); got != want {
			t.Errorf("reload_errors_total{source=%q} = %v, want %v", src, got, want)
		}
	}
	// Fixed files load again.
	replaceFile(t, a, "198.51.100.9\n")
	writeMMDB(t, asnDB, mmdbwriter.Options{}, []mmdbNet{{"198.51.100.0/24", asnRec(64502, "New AS")}})
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := fieldsOf(enrichOne(e, addr("198.51.100.9"))), (remoteFields{ASN: 64502, Org: "New AS", Intel: "a"}); got != want {
		t.Errorf("after the fix: got %+v, want %+v", got, want)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchReload: with watch on, replacing a file (by rename, in place,
// through a symlink swap) reloads it; a corrupt file is counted and the
// old data stays.
func TestWatchReload(t *testing.T) {
	dir := t.TempDir()
	list := writeFile(t, dir, "c2.txt", "198.51.100.1\n")
	// The ASN database is reached through a symlink, as with Kubernetes
	// ConfigMaps and versioned download directories.
	v1 := writeMMDB(t, filepath.Join(dir, "asn-v1.mmdb"), mmdbwriter.Options{}, []mmdbNet{{"198.51.100.0/24", asnRec(64501, "Old AS")}})
	link := filepath.Join(dir, "asn.mmdb")
	if err := os.Symlink(v1, link); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Watch = true
	cfg.ReloadDelay = 20 * time.Millisecond
	cfg.ASNDB = link
	cfg.Intel = []IntelList{{Name: "c2", File: list}, {Name: "other", File: writeFile(t, dir, "other.txt", "203.0.113.0/24\n")}}
	e := mustNew(t, cfg, Deps{Registerer: prometheus.NewPedanticRegistry()})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	intelOf := func(a string) string { return enrichOne(e, addr(a)).Intel }

	// Other files in the directory change all the time; they must not
	// postpone the reload.
	churn := make(chan struct{})
	churnDone := make(chan struct{})
	go func() {
		defer close(churnDone)
		for i := 0; ; i++ {
			select {
			case <-churn:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("busy-%d.parquet", i%3)), []byte("x"), 0o644)
		}
	}()
	replaceFile(t, list, "198.51.100.2\n")
	waitFor(t, "the renamed list", func() bool { return intelOf("198.51.100.2") == "c2" })
	close(churn)
	<-churnDone
	if got := intelOf("198.51.100.1"); got != "" {
		t.Errorf("old entry still listed: %q", got)
	}

	if err := os.WriteFile(list, []byte("198.51.100.3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the list rewritten in place", func() bool { return intelOf("198.51.100.3") == "c2" })

	if err := os.WriteFile(list, []byte("198.51.100.4\ngarbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload error", func() bool { return testutil.ToFloat64(e.m.reloadErrors.WithLabelValues("intel/c2")) >= 1 })
	if got := intelOf("198.51.100.3"); got != "c2" {
		t.Errorf("old data dropped after a failed reload: %q", got)
	}
	// Only the changed source was reloaded.
	if got := testutil.ToFloat64(e.m.reloads.WithLabelValues("intel/other")); got != 1 {
		t.Errorf("unchanged list reloaded: reloads_total = %v", got)
	}

	v2 := writeMMDB(t, filepath.Join(dir, "asn-v2.mmdb"), mmdbwriter.Options{}, []mmdbNet{{"198.51.100.0/24", asnRec(64502, "New AS")}})
	tmp := filepath.Join(dir, "asn.mmdb.new")
	if err := os.Symlink(v2, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the swapped database", func() bool { return enrichOne(e, addr("198.51.100.9")).RemoteASN == 64502 })

	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchConfigMap swaps a list the way Kubernetes updates a mounted
// ConfigMap: the file is a symlink through "..data", and the update
// renames a new "..data" symlink into place.
func TestWatchConfigMap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), "c2.txt", content)
	}
	version("..2026_11_22_a", "198.51.100.1\n")
	if err := os.Symlink("..2026_11_22_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(dir, "c2.txt")
	if err := os.Symlink(filepath.Join("..data", "c2.txt"), list); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Watch = true
	cfg.Intel = []IntelList{{Name: "c2", File: list}}
	e := mustNew(t, cfg, Deps{})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	version("..2026_11_22_b", "198.51.100.2\n")
	if err := os.Symlink("..2026_11_22_b", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the swapped ConfigMap", func() bool { return enrichOne(e, addr("198.51.100.2")).Intel == "c2" })
}

// TestWatchBusyFile: a list rewritten without pause is still reloaded
// (at the latest 10 × reload_delay after the first change).
func TestWatchBusyFile(t *testing.T) {
	dir := t.TempDir()
	list := writeFile(t, dir, "c2.txt", "198.51.100.1\n")
	cfg := testConfig()
	cfg.Watch = true
	cfg.ReloadDelay = 30 * time.Millisecond
	cfg.Intel = []IntelList{{Name: "c2", File: list}}
	e := mustNew(t, cfg, Deps{})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		if err := os.WriteFile(list, []byte("198.51.100.2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if enrichOne(e, addr("198.51.100.2")).Intel == "c2" {
			t.Logf("reloaded after %v of continuous writes", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("a continuously rewritten list was never reloaded")
}
