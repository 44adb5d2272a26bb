//go:build linux

package rootinit

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The sandbox promises RestrictNamespaces=yes (docs/appliance.md): the
// filter denies unshare and setns, but not clone and clone3 with namespace
// flags. The daemon's user, after every step of the sandbox that can run
// here (bounding set, user, filter), starts a child in a new user and
// network namespace, where it holds every capability: the kernel's
// namespace-only attack surface (nf_tables, raw sockets, mounting inside
// the namespace's own mount table) is open to a compromised daemon.
func TestBreakSandboxAllowsNewUserNamespaceThroughClone(t *testing.T) {
	if os.Getenv("CUSTODIAN_BREAK_SANDBOX_CHILD") == "1" {
		sandboxedChild()
		return
	}
	if os.Getuid() != 0 {
		t.Skip("dropping to the daemon's user needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBreakSandboxAllowsNewUserNamespaceThroughClone$", "-test.v")
	cmd.Env = append(os.Environ(), "CUSTODIAN_BREAK_SANDBOX_CHILD=1")
	out, err := cmd.CombinedOutput()
	s := string(out)
	if err != nil && !strings.Contains(s, "CLONE") {
		t.Fatalf("sandboxed child: %v\n%s", err, s)
	}
	if strings.Contains(s, "CLONE-NEWUSER-ALLOWED") {
		t.Errorf("under the sandbox's filter, as uid %d without capabilities, clone(CLONE_NEWUSER|CLONE_NEWNET) succeeded; the child's capabilities in its namespace:\n%s", DaemonUID, s)
	}
	if !strings.Contains(s, "CLONE-NEWUSER-REFUSED") && !strings.Contains(s, "CLONE-NEWUSER-ALLOWED") {
		t.Fatalf("the child did not get to the clone:\n%s", s)
	}
}

// sandboxedChild applies the sandbox's steps that need no PID 1 parent,
// then tries a new user namespace the way any program can: clone, not unshare.
func sandboxedChild() {
	for _, step := range []func() error{limits, dropBounding, dropUser, loadFilter} {
		if err := step(); err != nil {
			println("STEP-FAILED", err.Error())
			syscall.Exit(3)
		}
	}
	// The daemon runs after an execve, which makes it dumpable again; the
	// credential change above made this process undumpable.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
		println("STEP-FAILED", err.Error())
		syscall.Exit(3)
	}
	if err := syscall.Unshare(syscall.CLONE_NEWUSER); err == nil {
		println("UNSHARE-ALLOWED")
	}
	c := exec.Command("/bin/sh", "-c", "grep -E '^(Uid|CapEff)' /proc/self/status")
	c.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: DaemonUID, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: DaemonGID, Size: 1}},
	}
	out, err := c.CombinedOutput()
	if err != nil {
		println("CLONE-NEWUSER-REFUSED", err.Error())
		syscall.Exit(0)
	}
	println("CLONE-NEWUSER-ALLOWED")
	println(string(out))
	syscall.Exit(0)
}
