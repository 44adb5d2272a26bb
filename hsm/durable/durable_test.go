package durable

import (
	"os"
	"path/filepath"
	"slices"
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

// TestInvariantNothingIsLostOnPowerLossNewDirectoriesAreSynced: MkdirAll
// fsyncs the parent of every directory it makes (and only those), so a
// record written durably inside a new directory cannot vanish with the
// directory's entry at a power cut.
func TestInvariantNothingIsLostOnPowerLossNewDirectoriesAreSynced(t *testing.T) {
	var synced []string
	syncDir = func(dir string) error { synced = append(synced, dir); return SyncDir(dir) }
	t.Cleanup(func() { syncDir = SyncDir })

	root := t.TempDir()
	path := filepath.Join(root, "releases", "0a1b")
	if err := MkdirAll(path, 0o700); err != nil {
		t.Fatal(err)
	}
	want := []string{root, filepath.Join(root, "releases")}
	if !slices.Equal(synced, want) {
		t.Fatalf("synced %q, want %q", synced, want)
	}
	if info, err := os.Stat(path); err != nil || !info.IsDir() || info.Mode().Perm() != 0o700 {
		t.Fatalf("made %v, %v", info, err)
	}
	synced = nil
	if err := MkdirAll(path, 0o700); err != nil || len(synced) != 0 {
		t.Fatalf("an existing directory: %v, synced %q", err, synced)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(file, "sub"), 0o700); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a file in the way: %v", err)
	}
}
