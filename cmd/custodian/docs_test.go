//go:build !appliance

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestCheckedInDocsAreCurrent regenerates the man pages and completion
// scripts and compares them with the ones under docs/: a command or flag
// added, removed or reworded without "make man" fails here.
func TestCheckedInDocsAreCurrent(t *testing.T) {
	for _, c := range []struct {
		dir string
		gen func() (map[string][]byte, error)
	}{
		{"../../docs/man", manPages},
		{"../../docs/completions", completionScripts},
	} {
		want, err := c.gen()
		if err != nil {
			t.Fatal(err)
		}
		entries, err := os.ReadDir(c.dir)
		if err != nil {
			t.Fatalf("%v (run make man)", err)
		}
		have := make(map[string]bool)
		for _, e := range entries {
			have[e.Name()] = true
			got, err := os.ReadFile(filepath.Join(c.dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if w, ok := want[e.Name()]; !ok {
				t.Errorf("%s/%s: no such command any more (run make man)", c.dir, e.Name())
			} else if !bytes.Equal(got, w) {
				t.Errorf("%s/%s is stale (run make man)", c.dir, e.Name())
			}
		}
		var missing []string
		for name := range want {
			if !have[name] {
				missing = append(missing, name)
			}
		}
		sort.Strings(missing)
		for _, name := range missing {
			t.Errorf("%s/%s is missing (run make man)", c.dir, name)
		}
	}
}

// TestDocsAreDeterministic checks the generated files do not depend on the
// time or on the environment of whoever generates them.
func TestDocsAreDeterministic(t *testing.T) {
	first, err := manPages()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CUSTODIAN_DATA_DIR", "/somewhere/else")
	t.Setenv("SOURCE_DATE_EPOCH", "1")
	second, err := manPages()
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(second) {
		t.Fatalf("%d pages, then %d", len(first), len(second))
	}
	for name, page := range first {
		if !bytes.Equal(page, second[name]) {
			t.Errorf("%s differs between runs", name)
		}
	}
	if bytes.Contains(first["custodian.1"], []byte("/somewhere/else")) || bytes.Contains(second["custodian.1"], []byte("/somewhere/else")) {
		t.Error("the environment's data directory leaked into the page")
	}
}

// TestDocsCommandWritesAndPrunes runs "custodian docs man" twice over one
// directory: a page of a command that no longer exists is removed, other
// files stay.
func TestDocsCommandWritesAndPrunes(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "custodian-frobnicate.1")
	other := filepath.Join(dir, "README")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "docs", "man", dir)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale page kept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("unrelated file removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "custodian-ledger-prove.1")); err != nil {
		t.Error(err)
	}
	mustRun(t, "docs", "completions", filepath.Join(dir, "completions"))
	if _, err := os.Stat(filepath.Join(dir, "completions", "custodian.bash")); err != nil {
		t.Error(err)
	}
	if code, _, errOut := custodian(t, "docs", "man", other); code == 0 {
		t.Errorf("wrote into a file: %s", errOut)
	}
}
