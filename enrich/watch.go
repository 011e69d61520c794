package enrich

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDirs returns the directories that hold the source files. The
// watcher watches directories, not files: tools replace files by rename
// (curl -o tmp && mv, geoipupdate, Kubernetes ConfigMap symlink swaps),
// which a watch on the old file would miss.
func (e *Enricher) watchDirs() ([]string, error) {
	var dirs []string
	for _, s := range e.sources {
		abs, err := filepath.Abs(s.file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.describe(), err)
		}
		d := filepath.Dir(abs)
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs, nil
}

// watch waits for changes in the watched directories and, once they have
// been quiet for ReloadDelay, reloads the sources whose files changed
// (another inode, size or modification time, or no longer readable).
func (e *Enricher) watch(ctx context.Context, w *fsnotify.Watcher) {
	var timer *time.Timer
	var fire <-chan time.Time
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
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(e.cfg.ReloadDelay)
			} else {
				timer.Reset(e.cfg.ReloadDelay)
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
