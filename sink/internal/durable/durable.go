// Package durable writes files that are on stable storage when the call
// returns: the data is fsynced, the file appears by an atomic rename, and
// every directory entry on the way (the file's and those of directories the
// call created) is fsynced too, so that neither the file nor its directory
// can vanish in a crash after the call returned nil.
package durable

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFile writes data to path atomically and durably: a temporary
// dot-file in the same directory (".NAME.tmp", which globs like "*.parquet"
// skip) is written and fsynced, renamed to path, and the directory is
// fsynced. Missing directories are created with MkdirAll. On error no
// temporary file is left behind, and path is either absent, or its old
// content, or (when only the final directory fsync failed) the new one;
// calling WriteFile again with the same data is always safe.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

// MkdirAll is os.MkdirAll that also fsyncs the parent of every directory it
// creates, so that the new directories survive a crash. An existing
// directory is left alone (and not fsynced).
func MkdirAll(dir string, perm os.FileMode) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: errors.New("not a directory")}
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		// Created concurrently: sync the parent anyway, since its creator
		// may not have done it yet.
	}
	return SyncDir(parent)
}

// SyncDir fsyncs a directory, making the entries created, renamed or
// removed in it durable. File systems that cannot fsync a directory
// (EINVAL, ENOTSUP: some network and FUSE file systems) are taken to order
// their metadata themselves, and are not an error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}
