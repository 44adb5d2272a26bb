package durable

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFileReplacesRegularFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.json")
	for _, content := range []string{"first", "second"} {
		if err := WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q, %v; want %q", got, err, content)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestWriteFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/null", link, dir} {
		err := WriteFile(path, []byte("x"), 0o644)
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: got %v, want a refusal", path, err)
		}
	}
}

func TestCreateFileNeverOverwritesAndIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agency.key")
	if err := CreateFile(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", info.Mode(), err)
	}
	if err := CreateFile(path, []byte("other"), 0o600); err == nil {
		t.Fatal("overwrote an existing key")
	}
	got, _ := os.ReadFile(path)
	if string(got) != "secret" {
		t.Fatalf("content changed to %q", got)
	}
}

func TestIsTempNamesWriteFilesTemporaries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "crl.pem")
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	if !IsTemp(filepath.Base(tmp.Name())) {
		t.Errorf("%s is not recognised as a temporary file", tmp.Name())
	}
	for _, name := range []string{"crl.pem", ".crl.pem", ".crl.pem.tmp", ".tmp123", "crl.pem.tmp123", ".crl.pem.tmp12a"} {
		if IsTemp(name) {
			t.Errorf("%q taken for a temporary file", name)
		}
	}
}
