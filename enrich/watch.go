package enrich

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchSet says which directories to watch and which events matter. The
// watcher watches directories, not files: tools replace files by rename
// (curl -o tmp && mv, geoipupdate, Kubernetes ConfigMap symlink swaps),
// which a watch on the old file would miss. Events for other files in those
// directories are ignored, so that a busy directory does not keep
// postponing a reload. Where a source is a symlink, events for names
// starting with ".." in its directory count too: Kubernetes updates a
// mounted ConfigMap by swapping its "..data" symlink.
type watchSet struct {
	dirs  []string
	files map[string]bool // absolute paths of the sources
	links map[string]bool // directories holding a symlinked source
}

func (e *Enricher) watchSet() (*watchSet, error) {
	ws := &watchSet{files: map[string]bool{}, links: map[string]bool{}}
	for _, s := range e.sources {
		abs, err := filepath.Abs(s.file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.describe(), err)
		}
		d := filepath.Dir(abs)
		if !slices.Contains(ws.dirs, d) {
			ws.dirs = append(ws.dirs, d)
		}
		ws.files[abs] = true
		if fi, err := os.Lstat(abs); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			ws.links[d] = true
		}
	}
	return ws, nil
}

// relevant reports whether an event may concern a source.
func (ws *watchSet) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Clean(ev.Name)
	return ws.files[name] || ws.links[filepath.Dir(name)] && strings.HasPrefix(filepath.Base(name), "..")
}

// watch waits for changes to the sources and, once they have been quiet
// for ReloadDelay (or at the latest 10 × ReloadDelay after the first
// change, so that a file written without pause is still picked up),
// reloads the sources whose files changed (another inode, size or
// modification time, or no longer readable).
func (e *Enricher) watch(ctx context.Context, w *fsnotify.Watcher, ws *watchSet) {
	var (
		timer    *time.Timer
		fire     <-chan time.Time
		deadline time.Time // of the pending reload
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !ws.relevant(ev) {
				continue
			}
			now := time.Now()
			if fire == nil {
				deadline = now.Add(10 * e.cfg.ReloadDelay)
			}
			wait := min(e.cfg.ReloadDelay, deadline.Sub(now))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			e.log.Warn("file watch error", "err", err)
		case <-fire:
			fire = nil
			if err := e.reload(changedSince); err != nil {
				e.log.Error("reload failed, previous data kept", "err", err)
			}
		}
	}
}

// changedSince reports whether a source's file differs from what was
// loaded. It runs with reloadMu held.
func changedSince(s *source) bool {
	fi, err := os.Stat(s.file)
	if err != nil || s.stat == nil {
		return true
	}
	return !os.SameFile(fi, s.stat) || fi.Size() != s.stat.Size() || !fi.ModTime().Equal(s.stat.ModTime())
}
