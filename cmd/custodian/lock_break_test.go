package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
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

// On the console, update runs as root in transfer/ with the operator's
// flags (firmware/console TestBreakConsoleUpdateSignRunsAsRootWithAnyOutputPath).
// "update sign --key update.key --policy policy.json --out ../.lock"
// replaces the data directory's lock with a root-owned 0644 file; from
// then on the daemon's user cannot open it, so the daemon and every
// command that opens the TPM fail, and no console command can remove it.
func TestBreakRootUpdateSignReplacesTheLockAndLocksOutTheDaemon(t *testing.T) {
	if os.Getenv("CUSTODIAN_BREAK_LOCK_DIR") != "" {
		_, err := lockDataDir(os.Getenv("CUSTODIAN_BREAK_LOCK_DIR"))
		println("LOCK-AS-DAEMON", errText(err))
		syscall.Exit(0)
	}
	if os.Getuid() != 0 {
		t.Skip("the console runs update as root; so must this test")
	}
	base, err := os.MkdirTemp("", "break-lock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(base, "data")
	transfer := filepath.Join(data, "transfer")
	if err := os.MkdirAll(transfer, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{data, transfer} { // as the root init leaves them
		if err := os.Chown(d, 64000, 64000); err != nil {
			t.Fatal(err)
		}
	}
	policy, err := measure.DefaultSpec().Predict(measuretest.Root("config"), nil)
	if err != nil {
		t.Fatal(err)
	}
	pj, err := policy.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(transfer, "policy.json"), pj, 0o644); err != nil {
		t.Fatal(err)
	}
	in := func(name string) string { return filepath.Join(transfer, name) }
	mustRun(t, "--data-dir", data, "update", "keygen", "--out", in("update.key"), "--pub", in("update.pub"))

	self, err := os.ReadFile(os.Args[0]) // the build directory is root's alone
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "custodian.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestBreakRootUpdateSignReplacesTheLockAndLocksOutTheDaemon$")
	cmd.Env = append(os.Environ(), "CUSTODIAN_BREAK_LOCK_DIR="+data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 64000, Gid: 64000}}
	asDaemon := func() ([]byte, error) {
		c := exec.Command(cmd.Path, cmd.Args[1:]...)
		c.Env, c.SysProcAttr = cmd.Env, cmd.SysProcAttr
		return c.CombinedOutput()
	}
	if out, err := asDaemon(); !strings.Contains(string(out), "LOCK-AS-DAEMON ok") {
		t.Fatalf("before update sign, the daemon's user cannot take the lock: %v\n%s", err, out)
	}
	mustRun(t, "--data-dir", data, "update", "sign", "--key", in("update.key"), "--policy", in("policy.json"), "--out", in("../.lock"))
	out, err := asDaemon()
	if !strings.Contains(string(out), "LOCK-AS-DAEMON") {
		t.Fatalf("the daemon's user did not get to the lock: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "LOCK-AS-DAEMON ok") {
		t.Errorf("after update sign --out ../.lock (as root, from the console), the daemon's user cannot take the lock:\n%s", out)
	}
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
