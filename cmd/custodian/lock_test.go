package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// A device command while the daemon (or another command) holds the data
// directory fails at once and names the holder, instead of waiting on
// the TPM and running its commands in the middle of a release.
func TestDeviceCommandRefusedWhileDataDirInUse(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := filepath.Join(t.TempDir(), "data")
	dev := func(args ...string) []string {
		return append([]string{"--tpm", sw.Spec(), "--data-dir", dir}, args...)
	}
	mustRun(t, dev("enroll", "--id", "court-a", "--out", filepath.Join(t.TempDir(), "e.json"))...)

	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, _, errOut := custodian(t, dev("floor", "show")...)
	if code == 0 || !strings.Contains(errOut, "in use by custodian") || !strings.Contains(errOut, "hint: stop the release daemon") {
		t.Fatalf("second opener: exit %d, %q", code, errOut)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("the refusal took %v: it waited for the holder", waited)
	}
	unlock()
	if _, _, errOut := custodian(t, dev("floor", "show")...); strings.Contains(errOut, "in use") {
		t.Fatalf("the lock outlived its holder: %q", errOut)
	}
}
