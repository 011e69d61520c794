package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "a", "b", "f.parquet")
	for _, data := range []string{"one", "two"} { // the second replaces the first
		if err := WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != data {
			t.Fatalf("read back %q, %v; want %q", got, err, data)
		}
	}
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("%d entries in the directory, want only the file (no temporary file)", len(ents))
	}
}

func TestWriteFileUnwritable(t *testing.T) {
	base := t.TempDir()
	notDir := filepath.Join(base, "x")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(notDir, "d", "f"), []byte("x"), 0o644); err == nil {
		t.Fatal("write under a file succeeded")
	}
	if err := MkdirAll(notDir, 0o755); err == nil {
		t.Fatal("MkdirAll over a file succeeded")
	}
}
