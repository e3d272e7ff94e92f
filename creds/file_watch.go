package creds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// kubernetesDataLink is the symlink the kubelet swaps to update a mounted
// Secret or ConfigMap atomically: the visible files are symlinks through it
// ("password -> ..data/password"), and an update renames a new "..data_tmp"
// symlink over it. See AtomicWriter in kubernetes/pkg/volume/util.
const kubernetesDataLink = "..data"

// Bounds of the delay between attempts to re-add a watch whose directory
// disappeared.
const (
	rearmMinDelay = 50 * time.Millisecond
	rearmMaxDelay = 5 * time.Second
)

// Watch calls changed, debounced by FileOptions.Debounce, whenever the
// credential may have changed, until ctx is done; then it returns nil after
// releasing the fsnotify watcher. It also calls changed once as soon as the
// watch is in place (and again whenever it is re-established), because a
// change made while no watch existed would otherwise go unnoticed.
//
// It watches the directory that holds the file, or the directory itself in
// the directory form, because editors and Kubernetes replace files instead
// of writing them: an in-place write, a rename over the path and a swap of
// the Kubernetes "..data" symlink are all seen. If the watched directory
// disappears, Watch keeps trying to watch it again. It returns an error only
// if no fsnotify watcher can be created.
func (s *FileSource) Watch(ctx context.Context, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", s.path, err)
	}
	// Close stops fsnotify's reader goroutine and waits for it.
	defer w.Close()
	fw := &fileWatch{
		path:     s.path,
		base:     filepath.Base(s.path),
		debounce: s.debounce,
		w:        w,
		log:      s.log.With(zap.String("path", s.path)),
	}
	return fw.run(ctx, changed)
}

// fileWatch is the state of one Watch call. It is owned by the goroutine
// running Watch.
type fileWatch struct {
	path     string // cleaned FileSource path
	base     string // filepath.Base(path)
	debounce time.Duration
	w        *fsnotify.Watcher
	log      *zap.Logger

	watched string // directory currently watched; "" while there is none
	dirMode bool   // watched is path itself: every event in it counts
}

// eventKind is what an fsnotify event means for the credential.
type eventKind int

const (
	evIgnore  eventKind = iota // unrelated file
	evChange                   // the credential may have changed
	evRecheck                  // the path was (re)created: it may have become a directory
	evLost                     // the watched directory went away
)

func (fw *fileWatch) run(ctx context.Context, changed func()) error {
	// Timers follow Go 1.23 semantics (go.mod says 1.26): after Stop or
	// Reset no stale tick is delivered, so no draining is needed.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	rearm := time.NewTimer(time.Hour)
	rearm.Stop()
	defer rearm.Stop()
	rearmDelay := rearmMinDelay

	// tryArm (re)establishes the watch and reports whether it is in place;
	// on failure it schedules another attempt with backoff.
	tryArm := func() bool {
		if err := fw.arm(); err != nil {
			fw.log.Debug("cannot watch credential directory yet", zap.Error(err), zap.Duration("retry_in", rearmDelay))
			rearm.Reset(rearmDelay)
			rearmDelay = min(2*rearmDelay, rearmMaxDelay)
			return false
		}
		rearm.Stop()
		rearmDelay = rearmMinDelay
		return true
	}
	if tryArm() {
		changed()
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.w.Events:
			if !ok {
				return errors.New("fsnotify watcher closed")
			}
			switch fw.classify(ev) {
			case evIgnore:
			case evChange:
				debounce.Reset(fw.debounce)
			case evRecheck:
				// Usually a rename over the path, which needs no new watch;
				// arm switches forms if it became (or stopped being) a
				// directory.
				rearmDelay = rearmMinDelay
				tryArm()
				debounce.Reset(fw.debounce)
			case evLost:
				fw.log.Debug("credential directory went away; watching for it to return")
				fw.watched = "" // fsnotify has already dropped the watch
				rearmDelay = rearmMinDelay
				tryArm()
				debounce.Reset(fw.debounce)
			}
		case err, ok := <-fw.w.Errors:
			if !ok {
				return errors.New("fsnotify watcher closed")
			}
			// An overflow means events were lost: assume a change.
			fw.log.Warn("credential watch error", zap.Error(err))
			debounce.Reset(fw.debounce)
		case <-debounce.C:
			changed()
		case <-rearm.C:
			if tryArm() {
				changed()
			}
		}
	}
}

// arm makes the watch match what path currently is: the path itself when it
// is a directory, else the directory that holds it.
func (fw *fileWatch) arm() error {
	target, dirMode := filepath.Dir(fw.path), false
	if fi, err := os.Stat(fw.path); err == nil && fi.IsDir() {
		target, dirMode = fw.path, true
	}
	if target == fw.watched {
		fw.dirMode = dirMode
		return nil
	}
	if fw.watched != "" {
		// It fails with ErrNonExistentWatch if the kernel dropped it already.
		_ = fw.w.Remove(fw.watched)
		fw.watched = ""
	}
	if err := fw.w.Add(target); err != nil {
		return err
	}
	fw.watched, fw.dirMode = target, dirMode
	fw.log.Debug("watching credential", zap.String("dir", target), zap.Bool("directory_form", dirMode))
	return nil
}

// classify decides what ev means for the credential.
func (fw *fileWatch) classify(ev fsnotify.Event) eventKind {
	name := filepath.Clean(ev.Name)
	if fw.watched == "" {
		return evIgnore // a late event from a watch already dropped
	}
	if name == fw.watched {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return evLost
		}
		return evIgnore
	}
	if fw.dirMode {
		return evChange
	}
	switch filepath.Base(name) {
	case fw.base:
		if ev.Has(fsnotify.Create) {
			return evRecheck
		}
		return evChange
	case kubernetesDataLink:
		return evChange
	}
	return evIgnore
}
