package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// lockDataDir opens DIR/.lock with O_CREATE and without O_NOFOLLOW, and
// recordHolder truncates it and writes the command line into it. A link
// planted as .lock (by the data directory's owner, or on an SD card edited
// elsewhere) turns the first command that takes the lock into a truncate
// and write of the link's target with that command's privileges: the
// daemon's user empties its own ledger.db, and a command run as root on a
// host (sudo custodian ledger checkpoint) any file.
func TestBreakLockFollowsSymlinkAndTruncatesTarget(t *testing.T) {
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
	}
	got, _ := os.ReadFile(victim)
	if string(got) != precious {
		t.Errorf("taking the lock through a planted link rewrote its target: %q, was %q", got, precious)
	}
}

// The holder line comes from the lock file, which the daemon's user (or
// whoever edited the SD card) writes; it reaches the operator's console
// in the error. Only bytes below space are refused: a bidirectional
// override, C1 controls (U+009B is CSI) and DEL pass.
func TestBreakLockHolderMessageCarriesBidiAndC1Controls(t *testing.T) {
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
	if msg := err.Error(); strings.ContainsAny(msg, "\u202e\u202c\u009b") {
		t.Errorf("the busy message shows the holder's control characters to the operator: %q", msg)
	}
}
