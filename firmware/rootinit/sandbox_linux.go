package rootinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// SandboxName is argv[0] of the sandbox step: the custodian binary,
// started by the root init (its parent must be PID 1) as root in a mount
// namespace of its own. It builds the daemon's view of the system, drops
// to the daemon's user for good, and executes custodian with the rest of
// its arguments.
const SandboxName = "custodian-sandbox"

// basicDevices are the nodes every command sees in its /dev.
var basicDevices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}

// Sandbox is the sandbox step: args are "--dev PATH"... "--" and the
// custodian arguments. It returns only on failure.
func Sandbox(args []string) error {
	if os.Getppid() != 1 || os.Getuid() != 0 {
		return errors.New("the sandbox step runs only when the appliance's root init starts it")
	}
	var devices []string
	for len(args) >= 2 && args[0] == "--dev" {
		devices, args = append(devices, args[1]), args[2:]
	}
	if len(args) == 0 || args[0] != "--" {
		return errors.New("sandbox: want --dev PATH... -- ARGS")
	}
	// The bounding set, no_new_privs and the filter belong to a thread;
	// all of them are set on this one, which then executes the command.
	runtime.LockOSThread()
	steps := []struct {
		what string
		do   func() error
	}{
		{"private /tmp", privateTmp},
		{"private /dev", func() error { return privateDev(append(basicDevices, devices...)) }},
		{"read-only /run, /sys and /proc/sys", readOnlyMounts},
		{"resource limits", limits},
		{"dropping capabilities", dropBounding},
		{"changing to the daemon's user", dropUser},
		{"seccomp filter", loadFilter},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("sandbox: %s: %w", s.what, err)
		}
	}
	unix.Umask(0o077)
	env := []string{"HOME=" + DataDir, "TZ=UTC", "LANG=C.UTF-8"}
	return syscall.Exec(Binary, append([]string{"custodian"}, args[1:]...), env)
}

func privateTmp() error {
	return unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=16m", DaemonUID, DaemonGID))
}

// privateDev replaces /dev with a read-only tmpfs holding only the given
// device nodes, bound from the real /dev (DevicePolicy=closed).
func privateDev(devices []string) error {
	const old = "/tmp/.dev"
	if err := os.Mkdir(old, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/dev", old, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return err
	}
	for _, d := range devices {
		name, ok := strings.CutPrefix(filepath.Clean(d), "/dev/")
		if !ok || strings.Contains(name, "/") {
			return fmt.Errorf("device %s is not directly under /dev", d)
		}
		src := filepath.Join(old, name)
		if _, err := os.Stat(src); err != nil {
			continue // absent hardware: serve says so itself
		}
		f, err := os.OpenFile("/dev/"+name, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount(src, "/dev/"+name, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, "/dev/"+link); err != nil {
			return err
		}
	}
	if err := unix.Unmount(old, unix.MNT_DETACH); err != nil {
		return err
	}
	if err := os.Remove(old); err != nil {
		return err
	}
	return unix.Mount("", "/dev", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k")
}

// readOnlyMounts makes the writable mounts besides the data directory and
// the private /tmp read-only (ProtectSystem=strict, ProtectKernelTunables).
func readOnlyMounts() error {
	for _, m := range []string{"/run", "/sys", "/proc/sys", "/proc/sysrq-trigger"} {
		if _, err := os.Stat(m); errors.Is(err, os.ErrNotExist) {
			continue // not in every kernel's configuration
		}
		if err := unix.Mount(m, m, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
		if err := unix.Mount("", m, "", flags, ""); err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
	}
	return nil
}

// limits: no core dumps (the daemon's memory holds unsealed material
// briefly), bounded files and tasks (TasksMax).
func limits() error {
	for _, l := range []struct {
		res int
		max uint64
	}{
		{unix.RLIMIT_CORE, 0},
		{unix.RLIMIT_NOFILE, 4096},
		{unix.RLIMIT_NPROC, 256},
	} {
		if err := unix.Setrlimit(l.res, &unix.Rlimit{Cur: l.max, Max: l.max}); err != nil {
			return err
		}
	}
	return nil
}

// dropBounding empties the capability bounding and ambient sets, so no
// later exec can gain a capability (CapabilityBoundingSet=, AmbientCapabilities=).
func dropBounding() error {
	for c := 0; ; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break // past the last capability
		}
		if err != nil {
			return err
		}
	}
	return unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
}

// dropUser changes to the daemon's user and group with no supplementary
// groups; its devices are given to its group by the root init. The
// syscall package changes every thread of the process.
func dropUser() error {
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(DaemonGID, DaemonGID, DaemonGID); err != nil {
		return err
	}
	if err := syscall.Setresuid(DaemonUID, DaemonUID, DaemonUID); err != nil {
		return err
	}
	if syscall.Setuid(0) == nil {
		return errors.New("root could be regained")
	}
	return nil
}

// deniedSyscalls fail with EPERM under the filter: mounts, modules,
// reboot, swap, tracing and debugging, the clock, key rings, namespaces,
// identity changes and raw I/O (the unit's SystemCallFilter=~@privileged
// @mount @reboot @swap @debug @raw-io @obsolete and ProtectClock).
var deniedSyscalls = []string{
	"mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
	"swapon", "swapoff", "reboot", "kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module",
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open", "bpf", "userfaultfd",
	"iopl", "ioperm", "acct", "settimeofday", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64", "adjtimex", "stime",
	"sethostname", "setdomainname", "syslog", "vhangup", "quotactl", "uselib", "lookup_dcookie", "nfsservctl",
	"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid",
	"setuid32", "setgid32", "setreuid32", "setregid32", "setresuid32", "setresgid32", "setgroups32", "setfsuid32", "setfsgid32",
	"capset", "unshare", "setns", "chroot", "keyctl", "add_key", "request_key",
	"open_by_handle_at", "name_to_handle_at", "mknod", "mknodat", "personality",
}

// namespaceFlags are clone's flags that make a namespace. A new user
// namespace gives its creator every capability inside it, and with it the
// kernel's namespace-only attack surface (RestrictNamespaces=yes).
// CLONE_NEWTIME is left out: clone reads that bit as part of the exit
// signal, and only clone3 and unshare can make a time namespace.
const namespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// filterProgram is the sandbox's seccomp program: the denied calls fail
// with EPERM; clone with a namespace flag fails with EPERM; clone3, whose
// flags sit in memory the filter cannot read, fails with ENOSYS, so the
// C libraries fall back to clone (Go calls clone3 only to place a child
// in a cgroup or a time namespace, which nothing here asks for); a call made through another
// architecture's entry (32-bit calls on a 64-bit kernel), which the
// numbers below do not describe, kills the process.
func filterProgram() ([]bpf.Instruction, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range deniedSyscalls {
		if _, ok := info.SyscallNames[n]; ok {
			names = append(names, n)
		}
	}
	groups := []seccomp.SyscallGroup{
		{Names: names, Action: seccomp.ActionErrno | seccomp.Action(unix.EPERM)},
		{NamesWithCondtions: []seccomp.NameWithConditions{{Name: "clone", Conditions: seccomp.ArgumentConditions{
			{Argument: 0, Operation: seccomp.BitsSet, Value: namespaceFlags},
		}}}, Action: seccomp.ActionErrno | seccomp.Action(unix.EPERM)},
	}
	if _, ok := info.SyscallNames["clone3"]; ok {
		groups = append(groups, seccomp.SyscallGroup{Names: []string{"clone3"}, Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS)})
	}
	policy := seccomp.Policy{DefaultAction: seccomp.ActionAllow, Syscalls: groups}
	prog, err := policy.Assemble()
	if err != nil {
		return nil, err
	}
	// The library lets a foreign architecture's calls through to the
	// default action; this check in front kills them instead.
	archCheck := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompDataArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionKillProcess)},
	}
	return append(archCheck, prog...), nil
}

// seccompDataArch is the offset of arch in struct seccomp_data.
const seccompDataArch = 4

// loadFilter sets no_new_privs and installs the filter on every thread.
func loadFilter() error {
	prog, err := filterProgram()
	if err != nil {
		return err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(filter)
	if errno != 0 {
		return errno
	}
	return nil
}
