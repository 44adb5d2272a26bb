package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/release"
)

// The officer reads which key IDs failed and why, not a Go map.
func TestFailedKeyIDsReadAsAList(t *testing.T) {
	got := failedKeyIDs(map[string]release.Code{"2026-12": release.CodePartialFailed, "2026-11": release.CodeChangedAfterApproval})
	if want := "2026-11 (changed_after_approval), 2026-12 (partial_failed)"; got != want {
		t.Errorf("failedKeyIDs = %q, want %q", got, want)
	}
}

// TestReleasePathsRefuseSaltsOverAPackage: a salts file where a package
// goes (--salts-out equal to --out, or the default NAME.salts.json of a
// warrant naming a key ID "salts") and an existing salts file are refused
// before anything is submitted, with the flag to change.
func TestReleasePathsRefuseSaltsOverAPackage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "court-a.release.json")
	defaultSalts := filepath.Join(dir, "court-a.release.salts.json")
	for _, c := range []struct {
		name        string
		keyIDs      []string
		salts, want string
	}{
		{"equal to --out", []string{"2026-11"}, out, "is also where the package of key ID 2026-11 goes"},
		{"equal to --out, spelled otherwise", []string{"2026-11"}, filepath.Join(dir, ".", "court-a.release.json"), "is also where the package of key ID 2026-11 goes"},
		{"key ID salts", []string{"2026-11", "salts"}, defaultSalts, "is also where the package of key ID salts goes"},
	} {
		err := checkReleasePaths(c.keyIDs, out, c.salts)
		if err == nil || !strings.Contains(printed(err), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if err := checkReleasePaths([]string{"2026-11", "2026-12"}, out, defaultSalts); err != nil {
		t.Fatalf("distinct paths: %v", err)
	}
	if err := os.WriteFile(defaultSalts, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkReleasePaths([]string{"2026-11"}, out, defaultSalts); err == nil || !strings.Contains(printed(err), "choose another --salts-out") {
		t.Errorf("an existing salts file: %v", err)
	}
}

// printed is err as the user reads it: the error line and its hints.
func printed(err error) string {
	var b strings.Builder
	printError(&b, err)
	return b.String()
}
