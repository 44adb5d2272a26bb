//go:build linux

package rootinit

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// RestrictNamespaces=yes (docs/appliance.md): the daemon's user, after
// every step of the sandbox that can run here (bounding set, user,
// filter), cannot start a child in a new user and network namespace, where
// it would hold every capability: not by unshare, not by clone with
// namespace flags, not by clone3.
func TestInvariantDaemonCannotCreateNamespaces(t *testing.T) {
	if os.Getenv("CUSTODIAN_SANDBOX_CHILD") == "1" {
		sandboxedChild()
		return
	}
	if os.Getuid() != 0 {
		t.Skip("dropping to the daemon's user needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInvariantDaemonCannotCreateNamespaces$", "-test.v")
	cmd.Env = append(os.Environ(), "CUSTODIAN_SANDBOX_CHILD=1")
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
		println("CLONE-NEWUSER-ALLOWED by unshare")
	}
	if _, _, errno := syscall.RawSyscall(unix.SYS_CLONE3, 0, 0, 0); errno != unix.ENOSYS {
		println("CLONE-NEWUSER-ALLOWED clone3 answered", errno.Error(), "not ENOSYS")
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

// The filter's first check is the architecture: a call through another
// architecture's entry (a 32-bit program on a 64-bit kernel) is killed,
// whatever its number, and clone3 answers ENOSYS so callers fall back to
// clone, whose flags the filter can read. The seccomp data is laid out
// for the BPF interpreter here, which loads words big-endian; only the
// number and the architecture are read before these answers.
func TestInvariantSandboxFilterKillsForeignArchitectures(t *testing.T) {
	prog, err := filterProgram()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	native, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	run := func(nr int32, archID uint32) uint32 {
		var b bytes.Buffer
		binary.Write(&b, binary.BigEndian, struct {
			NR   int32
			Arch uint32
			IP   uint64
			Args [6]uint64
		}{NR: nr, Arch: archID})
		ret, err := vm.Run(b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return uint32(ret)
	}
	getpid := int32(native.SyscallNames["getpid"])
	if got := run(getpid, uint32(native.ID)); got != unix.SECCOMP_RET_ALLOW {
		t.Errorf("getpid on this architecture: action %#x, want allow", got)
	}
	for _, foreign := range []uint32{unix.AUDIT_ARCH_ARM, unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_AARCH64, unix.AUDIT_ARCH_X86_64} {
		if foreign == uint32(native.ID) {
			continue
		}
		if got := run(getpid, foreign); got != unix.SECCOMP_RET_KILL_PROCESS {
			t.Errorf("a call through architecture %#x: action %#x, want kill", foreign, got)
		}
	}
	if nr, ok := native.SyscallNames["clone3"]; ok {
		if got := run(int32(nr), uint32(native.ID)); got != unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS) {
			t.Errorf("clone3: action %#x, want ENOSYS", got)
		}
	}
}
