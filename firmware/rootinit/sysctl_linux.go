package rootinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SysctlDir is where the kernel's tunables are written.
const SysctlDir = "/proc/sys"

// sysctl is one kernel tunable the root init sets before it starts
// anything, and whether the appliance refuses to start without it.
type sysctl struct {
	name, value string
	required    bool
}

// sysctls close what no unprivileged program on the appliance needs:
// user namespaces (whose creator holds every capability inside them),
// unprivileged BPF and userfaultfd, kernel pointers and the kernel log,
// ptrace, links and files planted in sticky directories, kexec, SysRq,
// line-discipline autoloading, core dumps of set-id programs. A
// tunable the kernel does not have (not configured) is skipped: the
// feature it restricts is then absent too.
var sysctls = []sysctl{
	{"user/max_user_namespaces", "0", true},
	{"kernel/unprivileged_bpf_disabled", "1", false},
	{"net/core/bpf_jit_harden", "2", false},
	{"vm/unprivileged_userfaultfd", "0", false},
	{"kernel/kptr_restrict", "2", false},
	{"kernel/dmesg_restrict", "1", false},
	{"kernel/perf_event_paranoid", "3", false},
	{"kernel/yama/ptrace_scope", "3", false},
	{"kernel/kexec_load_disabled", "1", false},
	{"kernel/sysrq", "0", false},
	{"dev/tty/ldisc_autoload", "0", false},
	{"fs/protected_symlinks", "1", false},
	{"fs/protected_hardlinks", "1", false},
	{"fs/protected_fifos", "2", false},
	{"fs/protected_regular", "2", false},
	{"fs/suid_dumpable", "0", false},
}

// hardenKernel writes the tunables under dir (SysctlDir on the device).
// It returns an error only for a required tunable; the others that fail
// are returned as notes for the log.
func hardenKernel(dir string) (notes []string, err error) {
	for _, s := range sysctls {
		werr := writeExisting(filepath.Join(dir, s.name), s.value+"\n")
		switch {
		case werr == nil, errors.Is(werr, os.ErrNotExist):
		case s.required:
			return notes, fmt.Errorf("setting %s to %s: %w", s.name, s.value, werr)
		default:
			notes = append(notes, fmt.Sprintf("cannot set %s to %s: %v", s.name, s.value, werr))
		}
	}
	return notes, nil
}

// writeExisting writes a tunable's file, never creating one.
func writeExisting(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
