package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// recordHolder truncates the lock file and writes the command line into
// it. A link planted as .lock (by the data directory's owner, or on an SD
// card edited elsewhere) must not turn that into a truncate and write of
// the link's target (the daemon's ledger.db, or any file for a command run
// as root on a host): the lock refuses a link, with what to do.
func TestLockNeverFollowsALink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "ledger.db")
	const precious = "entries that must never be lost\n"
	if err := os.WriteFile(victim, []byte(precious), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, lockName)); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockDataDir(dir)
	if err == nil {
		unlock()
		t.Error("the lock was taken through a planted link")
	} else if !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(strings.Join(hintsOf(err), " "), "remove it") {
		t.Errorf("err = %v (hint %q), want a refusal naming the link and what to do", err, strings.Join(hintsOf(err), " "))
	}
	got, _ := os.ReadFile(victim)
	if string(got) != precious {
		t.Errorf("taking the lock through a planted link rewrote its target: %q, was %q", got, precious)
	}
}

// A FIFO (or any other node) planted as .lock is refused without blocking.
func TestLockRefusesANonRegularFile(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, lockName), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := lockDataDir(dir)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), "of the data directory") {
		t.Fatalf("err = %v, want a refusal of the data directory's FIFO", err)
	}
	// The monitor's --state lock names its own directory.
	_, err = lockState(dir)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), "of --state "+dir) {
		t.Fatalf("err = %v, want a refusal of --state's FIFO", err)
	}
}

// The holder line comes from the lock file, which the daemon's user (or
// whoever edited the SD card) writes; it reaches the operator's console
// in the error, so it is shown by the display rules: a bidirectional
// override, C1 controls (U+009B is CSI) and DEL are escaped.
func TestLockHolderShownByTheDisplayRules(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, lockName)
	if err := os.WriteFile(lock, []byte("custodian serve \u202eevil\u202c \u009b2J (pid 1)\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir)
	if !errors.Is(err, errDataDirBusy) {
		t.Fatalf("lock held elsewhere: %v", err)
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\u202e\u202c\u009b") {
		t.Errorf("the busy message shows the holder's control characters to the operator: %q", msg)
	}
	if !strings.Contains(msg, "<U+202E>evil") {
		t.Errorf("the busy message does not show what the holder line holds: %q", msg)
	}
}
