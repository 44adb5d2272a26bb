//go:build linux

package rootinit

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// prepareDataDir changes only the data directory and transfer/, never
// following a planted link. A data partition (edited on another machine,
// or by the daemon's user, which owns the data directory) whose transfer
// is a link must not make the root init, as root, chmod 0700 whatever the
// link names at every boot (/run/custodian/boot.cel, /dev/null): it
// refuses the link and changes nothing through it.
func TestInvariantPrepareDataDirNeverFollowsALink(t *testing.T) {
	if os.Getenv("CUSTODIAN_SETUP_CHILD") == "1" {
		setupChild(linkedTransfer)
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInvariantPrepareDataDirNeverFollowsALink$", "-test.v")
	cmd.Env = append(os.Environ(), "CUSTODIAN_SETUP_CHILD=1")
	out, _ := cmd.CombinedOutput()
	s := string(out)
	switch {
	case strings.Contains(s, "VICTIM-MODE -rwx------"):
		t.Errorf("prepareDataDir chmodded the target of a planted transfer link (was -rw-r--r--):\n%s", s)
	case strings.Contains(s, "VICTIM-MODE") && !strings.Contains(s, "PREPARE "+filepath.Join(DataDir, "transfer")+" is not a directory"):
		t.Errorf("prepareDataDir did not refuse a link in place of transfer/:\n%s", s)
	case strings.Contains(s, "VICTIM-MODE"):
	default:
		t.Skipf("no private mount namespace here:\n%s", s)
	}
}

// setupChild runs prepareDataDir in a private mount namespace whose
// /var/lib is a fresh tmpfs, after plant has changed the data directory.
func setupChild(plant func(must func(string, error))) {
	runtime.LockOSThread()
	must := func(what string, err error) {
		if err != nil {
			println("SETUP-FAILED", what, err.Error())
			syscall.Exit(0)
		}
	}
	must("unshare", unix.Unshare(unix.CLONE_NEWNS))
	must("private", unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""))
	must("tmpfs", unix.Mount("tmpfs", "/var/lib", "tmpfs", 0, "mode=0755"))
	must("mkdir", os.Mkdir(DataDir, 0o755))
	plant(must)
	syscall.Exit(0)
}

// linkedTransfer makes transfer a link to a root-owned file.
func linkedTransfer(must func(string, error)) {
	victim := "/var/lib/victim"
	must("victim", os.WriteFile(victim, []byte("root's file"), 0o644))
	must("chmod", os.Chmod(victim, 0o644))
	must("link", os.Symlink(victim, filepath.Join(DataDir, "transfer")))
	err := prepareDataDir()
	fi, serr := os.Stat(victim)
	must("stat", serr)
	println("PREPARE", errString(err))
	println("VICTIM-MODE", fi.Mode().String())
}

// rootLock leaves a root-owned lock file, as a root command leaves it.
func rootLock(must func(string, error)) {
	lock := filepath.Join(DataDir, ".lock")
	must("lock", os.WriteFile(lock, nil, 0o644))
	err := prepareDataDir()
	var st unix.Stat_t
	must("stat", unix.Stat(lock, &st))
	println("PREPARE", errString(err))
	println("LOCK-OWNER", st.Uid, st.Gid)
}

// The lock file a command run as root left behind is the daemon's user's
// again after a boot: it could otherwise lock the daemon out for good.
func TestRootInitGivesTheLockBackToTheDaemon(t *testing.T) {
	if os.Getenv("CUSTODIAN_SETUP_CHILD") == "lock" {
		setupChild(rootLock)
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRootInitGivesTheLockBackToTheDaemon$", "-test.v")
	cmd.Env = append(os.Environ(), "CUSTODIAN_SETUP_CHILD=lock")
	out, _ := cmd.CombinedOutput()
	s := string(out)
	switch {
	case strings.Contains(s, "SETUP-FAILED"):
		t.Skipf("no private mount namespace here:\n%s", s)
	case !strings.Contains(s, "LOCK-OWNER 64000 64000"):
		t.Errorf("the lock is not the daemon's user's after prepareDataDir:\n%s", s)
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
