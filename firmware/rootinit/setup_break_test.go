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

// prepareDataDir says it changes only the data directory and transfer/,
// never following a planted link; it Lchowns transfer but then Chmods it,
// which follows a link. A data partition (edited on another machine, or by
// the daemon's user, which owns the data directory) whose transfer is a
// link makes the root init, as root, chmod 0700 whatever the link names at
// every boot: /run/custodian/boot.cel (attest can no longer read it), or
// /dev/null, which the sandbox binds into every command's /dev.
func TestBreakPrepareDataDirChmodsThroughPlantedTransferLink(t *testing.T) {
	if os.Getenv("CUSTODIAN_BREAK_SETUP_CHILD") == "1" {
		setupChild()
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBreakPrepareDataDirChmodsThroughPlantedTransferLink$", "-test.v")
	cmd.Env = append(os.Environ(), "CUSTODIAN_BREAK_SETUP_CHILD=1")
	out, _ := cmd.CombinedOutput()
	s := string(out)
	switch {
	case strings.Contains(s, "VICTIM-MODE -rwx------"):
		t.Errorf("prepareDataDir chmodded the target of a planted transfer link (was -rw-r--r--):\n%s", s)
	case strings.Contains(s, "VICTIM-MODE"):
	default:
		t.Skipf("no private mount namespace here:\n%s", s)
	}
}

// setupChild runs prepareDataDir in a private mount namespace whose
// /var/lib is a fresh tmpfs, with transfer a link to a root-owned file.
func setupChild() {
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
	victim := "/var/lib/victim"
	must("victim", os.WriteFile(victim, []byte("root's file"), 0o644))
	must("chmod", os.Chmod(victim, 0o644))
	must("link", os.Symlink(victim, filepath.Join(DataDir, "transfer")))
	err := prepareDataDir()
	fi, serr := os.Stat(victim)
	must("stat", serr)
	println("PREPARE", errString(err))
	println("VICTIM-MODE", fi.Mode().String())
	syscall.Exit(0)
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
