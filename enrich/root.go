package enrich

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccflow/ccflow/config"
	"github.com/ccflow/ccflow/flow"
)

// Errors returned by the lifecycle methods.
var (
	// ErrStarted is returned by Start when the Enricher is already started.
	ErrStarted = errors.New("enrich: already started")
	// ErrStopped is returned by Start after Stop.
	ErrStopped = errors.New("enrich: stopped")
)

// Deps are the Enricher's dependencies. Every field may be nil: a nil
// Logger discards, a nil Registerer leaves the metrics unregistered.
type Deps struct {
	// Logger receives load and reload events; it is narrowed with
	// stage=enrich.
	Logger *slog.Logger
	// Registerer registers the ccflow_enrich_* metrics.
	Registerer prometheus.Registerer
}

// Enricher fills the enrichment fields of pseudonymized flows. Enrich,
// NewWorker and Reload are goroutine-safe; see Worker for the per-goroutine
// handle that dedicated collector workers should use.
type Enricher struct {
	cfg       Config
	log       *slog.Logger
	m         *metrics
	exporters map[flow.Addr]*exporterInfo
	providers providerTable
	// cacheShift and cacheSets size each worker's cache (0 sets: no cache).
	cacheSets  int
	cacheShift uint
	seed0      uint64
	seed1      uint64

	snap atomic.Pointer[snapshot]
	pool sync.Pool

	reloadMu sync.Mutex // serializes loads; guards sources
	sources  []*source

	lifeMu  sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// snapshot is the immutable data that workers read; a reload builds a new
// one and swaps it in.
type snapshot struct {
	asn     *mmdbData   // nil: no ASN database
	country *mmdbData   // nil: no country database
	intel   *intelTable // nil: no intel lists
}

type sourceKind uint8

const (
	srcASN sourceKind = iota
	srcCountry
	srcIntel
)

// source is one file that enrichment reads. Its loaded fields are guarded
// by Enricher.reloadMu.
type source struct {
	kind   sourceKind
	key    string // configuration key, for errors
	label  string // metric label
	file   string
	column string

	stat     os.FileInfo
	db       *mmdbData
	prefixes []netip.Prefix
}

// describe names the source in errors: its key (with the list name) and
// its file.
func (s *source) describe() string {
	return s.key + ": " + s.file
}

// exporterInfo holds the configured names of one exporter. Interface
// names sit in a slice indexed by SNMP index when the indexes are small
// (no hashing per flow), else in a map.
type exporterInfo struct {
	name   string
	dense  []string
	sparse map[uint32]string
}

// maxDenseIfIndex is the largest SNMP index kept in exporterInfo.dense.
const maxDenseIfIndex = 4095

// ifName returns the name of interface i, or "".
func (x *exporterInfo) ifName(i uint32) string {
	if i < uint32(len(x.dense)) {
		return x.dense[i]
	}
	return x.sparse[i]
}

// providerTable classifies ASes; rules apply in configuration order.
type providerTable struct {
	classes []string
	byASN   map[uint32]int // AS number -> first rule naming it
	orgs    []orgPattern   // in rule order
}

type orgPattern struct {
	lower string
	rule  int
}

// class returns the provider class of an AS, or "".
func (p *providerTable) class(asn uint32, org string) string {
	best := len(p.classes)
	if r, ok := p.byASN[asn]; ok && asn != 0 {
		best = r
	}
	if org != "" && len(p.orgs) > 0 {
		lo := strings.ToLower(org)
		for _, o := range p.orgs {
			if o.rule >= best {
				break
			}
			if strings.Contains(lo, o.lower) {
				best = o.rule
				break
			}
		}
	}
	if best < len(p.classes) {
		return p.classes[best]
	}
	return ""
}

// New validates cfg and loads every source. A missing or corrupt file is
// an error that names the configuration key and the file. New starts no
// goroutine; Start starts the file watcher.
func New(cfg Config, deps Deps) (*Enricher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, config.Prefix("enrich", err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Enricher{
		cfg:       cfg,
		log:       log.With("stage", "enrich"),
		m:         newMetrics(deps.Registerer),
		exporters: map[flow.Addr]*exporterInfo{},
		seed0:     rand.Uint64(),
		seed1:     rand.Uint64(),
	}
	if cfg.CacheSize > 0 {
		sets := 1
		for sets*cacheWays < cfg.CacheSize {
			sets *= 2
		}
		e.cacheSets = sets
		e.cacheShift = 64
		for s := sets; s > 1; s >>= 1 {
			e.cacheShift--
		}
	}
	e.pool.New = func() any { return e.NewWorker() }

	e.providers.byASN = map[uint32]int{}
	for i, r := range cfg.Providers {
		e.providers.classes = append(e.providers.classes, r.Class)
		for _, a := range r.ASNs {
			if _, ok := e.providers.byASN[a]; !ok {
				e.providers.byASN[a] = i
			}
		}
		for _, o := range r.OrgContains {
			e.providers.orgs = append(e.providers.orgs, orgPattern{lower: strings.ToLower(strings.TrimSpace(o)), rule: i})
		}
	}
	for _, x := range cfg.Exporters {
		a := netip.MustParseAddr(x.Addr) // checked by Validate
		info := &exporterInfo{name: x.Name}
		for _, f := range x.Interfaces {
			if f.Index <= maxDenseIfIndex {
				if int(f.Index) >= len(info.dense) {
					info.dense = append(info.dense, make([]string, int(f.Index)+1-len(info.dense))...)
				}
				info.dense[f.Index] = f.Name
				continue
			}
			if info.sparse == nil {
				info.sparse = map[uint32]string{}
			}
			info.sparse[f.Index] = f.Name
		}
		e.exporters[flow.AddrFrom(a.Unmap())] = info
	}

	if cfg.ASNDB != "" {
		e.sources = append(e.sources, &source{kind: srcASN, key: "enrich.asn_db", label: "asn_db", file: cfg.ASNDB})
	}
	if cfg.CountryDB != "" {
		e.sources = append(e.sources, &source{kind: srcCountry, key: "enrich.country_db", label: "country_db", file: cfg.CountryDB})
	}
	for i, l := range cfg.Intel {
		e.sources = append(e.sources, &source{kind: srcIntel, key: fmt.Sprintf("enrich.intel[%d] (%s)", i, l.Name),
			label: "intel/" + l.Name, file: l.File, column: l.Column})
	}
	e.snap.Store(&snapshot{})
	if err := e.reload(func(*source) bool { return true }); err != nil {
		return nil, err
	}
	return e, nil
}

// Start starts the file watcher when the configuration asks for it. It
// returns at once; the watcher runs until ctx is canceled or Stop is
// called.
func (e *Enricher) Start(ctx context.Context) error {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	switch {
	case e.stopped:
		return ErrStopped
	case e.started:
		return ErrStarted
	}
	e.started = true
	e.done = make(chan struct{})
	if !e.cfg.Watch || len(e.sources) == 0 {
		close(e.done)
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		close(e.done)
		return fmt.Errorf("watch enrichment sources: %w", err)
	}
	ws, err := e.watchSet()
	if err != nil {
		_ = w.Close()
		close(e.done)
		return err
	}
	for _, d := range ws.dirs {
		if err := w.Add(d); err != nil {
			_ = w.Close()
			close(e.done)
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	ctx, e.cancel = context.WithCancel(ctx)
	go func() {
		defer close(e.done)
		defer w.Close()
		e.watch(ctx, w, ws)
	}()
	return nil
}

// Stop stops the file watcher and waits for it. It is idempotent. Enrich
// keeps working after Stop with the data loaded last.
func (e *Enricher) Stop() error {
	e.lifeMu.Lock()
	defer e.lifeMu.Unlock()
	e.stopped = true
	if e.cancel != nil {
		e.cancel()
	}
	if e.done != nil {
		<-e.done
	}
	return nil
}

// Reload reads every source again (the lead calls it on SIGHUP). Sources
// that load replace their data atomically; a source that fails keeps its
// previous data, is counted in ccflow_enrich_reload_errors_total, and is
// named in the returned error. Flows being enriched meanwhile are never
// dropped: each batch sees either the old or the new data.
func (e *Enricher) Reload() error {
	return e.reload(func(*source) bool { return true })
}

// reload loads the sources for which pick returns true (pick runs with
// reloadMu held), then swaps in a snapshot with their new data.
func (e *Enricher) reload(pick func(*source) bool) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	var errs []error
	changed, intelChanged := false, false
	for _, s := range e.sources {
		if !pick(s) {
			continue
		}
		start := time.Now()
		entries, err := e.load(s)
		if err != nil {
			e.m.reloadErrors.WithLabelValues(s.label).Inc()
			errs = append(errs, fmt.Errorf("%s: %w", s.describe(), err))
			continue
		}
		e.m.reloads.WithLabelValues(s.label).Inc()
		e.m.entries.WithLabelValues(s.label).Set(float64(entries))
		e.m.loadTime.WithLabelValues(s.label).Set(float64(time.Now().UnixNano()) / 1e9)
		e.log.Info("source loaded", "source", s.label, "file", s.file, "entries", entries, "took", time.Since(start).Round(time.Millisecond))
		changed = true
		intelChanged = intelChanged || s.kind == srcIntel
	}
	if changed {
		old := e.snap.Load()
		ns := &snapshot{intel: old.intel}
		var names []string
		var lists [][]netip.Prefix
		for _, s := range e.sources {
			switch s.kind {
			case srcASN:
				ns.asn = s.db
			case srcCountry:
				ns.country = s.db
			case srcIntel:
				names = append(names, strings.TrimPrefix(s.label, "intel/"))
				lists = append(lists, s.prefixes)
			}
		}
		if intelChanged {
			ns.intel = buildIntel(names, lists)
		}
		// Old data is not freed explicitly: a worker may still be in a
		// batch with it, or hold cache entries that point into it until
		// its next batch. The garbage collector frees it with the last
		// reference.
		e.snap.Store(ns)
	}
	return errors.Join(errs...)
}

// load reads one source; on success it replaces the source's data and
// returns its entry count.
func (e *Enricher) load(s *source) (int, error) {
	data, fi, err := readFile(s.file)
	if err != nil {
		return 0, err
	}
	switch s.kind {
	case srcIntel:
		ps, err := parseIntel(bytes.NewReader(data), s.column)
		if err != nil {
			return 0, err
		}
		s.prefixes, s.stat = ps, fi
		return len(ps), nil
	default:
		d, err := loadMMDB(data, s.kind, e.cfg.VerifyMMDB, &e.providers)
		if err != nil {
			return 0, err
		}
		s.db, s.stat = d, fi
		return d.networks, nil
	}
}

// readFile reads a file and returns the FileInfo of what was read.
func readFile(name string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if fi.IsDir() {
		return nil, nil, errors.New("is a directory")
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, unwrapPath(err)
	}
	if len(data) == 0 {
		return nil, nil, errors.New("file is empty")
	}
	return data, fi, nil
}

// Enrich fills the enrichment fields of every flow in place, from the
// sources that are configured: RemoteASN, RemoteASOrg and Provider (ASN
// database), RemoteCountry (country database) and Intel (intel lists) from
// Remote (cleared when Remote is zero), and ExporterName, InIfName and
// OutIfName (exporters) from Exporter, InIf and OutIf. Fields of sources that
// are not configured are left as they are, so a later stage can add, say,
// intel to flows that a collector enriched. It is goroutine-safe: it borrows
// a Worker from a pool, so a goroutine that calls it repeatedly usually
// keeps its warm cache. The strings it stores are shared and must be
// treated as read-only.
func (e *Enricher) Enrich(flows []flow.Pseudo) {
	w := e.pool.Get().(*Worker)
	w.Enrich(flows)
	e.pool.Put(w)
}
