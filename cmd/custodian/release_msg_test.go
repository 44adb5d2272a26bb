package main

import (
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
