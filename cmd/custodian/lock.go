package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/hsm/warrant"
)

// lockName is the lock file in the data directory. Every command that
// opens the TPM holds it until it closes the TPM, the release daemon for
// its whole life: a second command would otherwise wait on swtpm's one
// connection without a word, or interleave its sessions with the
// daemon's on a TPM without a resource manager, and spoil a release.
const lockName = ".lock"

// errDataDirBusy is returned when another process holds the lock.
var errDataDirBusy = errors.New("the data directory and its TPM are in use")

// lockDataDir takes the data directory's lock without waiting, and
// records who holds it so that the next one can be told. A data
// directory that does not exist yet (before enroll) is not locked.
func lockDataDir(dir string) (unlock func(), err error) {
	unlock, err = lockFile(filepath.Join(dir, lockName), "the data directory", func(holder string) error {
		return withHint(fmt.Errorf("%w by %s", errDataDirBusy, holder),
			"stop the release daemon (or let the other command finish) and try again; on the appliance, use the console, which stops the daemon for you")
	})
	if errors.Is(err, fs.ErrNotExist) {
		return func() {}, nil
	}
	return unlock, err
}

// lockFile takes the lock file at path (openLock) without waiting, and
// records who holds it. busy says what it means that another process,
// holder, holds it; what names the directory the lock guards in any other
// error.
func lockFile(path, what string, busy func(holder string) error) (unlock func(), err error) {
	f, err := openLock(path, what)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := readHolder(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, busy(holder)
		}
		return nil, fmt.Errorf("locking %s: %w", what, err)
	}
	recordHolder(f)
	return func() { f.Close() }, nil
}

// openLock opens (or creates) the lock file without following a link and
// refuses anything but a regular file: recordHolder truncates and writes
// it, which through a planted link would destroy the link's target.
// O_NONBLOCK and O_NOCTTY keep a planted FIFO or terminal from blocking or
// becoming this process's terminal before it is refused. what names the
// directory the lock guards.
func openLock(path, what string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ENOENT) {
		return nil, fs.ErrNotExist
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, withHint(fmt.Errorf("the lock %s of %s is a symbolic link, not a file", path, what),
			"remove it (nothing else is stored there); the next command creates the lock afresh")
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return nil, withHint(fmt.Errorf("this user may not open the lock %s of %s: permission denied", path, what),
			"run as the user who owns it (root for the data directory, e.g. sudo custodian ...)")
	}
	if err != nil {
		return nil, fmt.Errorf("opening the lock %s of %s: %w", path, what, err)
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening the lock of %s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, withHint(fmt.Errorf("the lock %s of %s is not a regular file", path, what),
			"remove it (nothing else is stored there); the next command creates the lock afresh")
	}
	return f, nil
}

// recordHolder writes this process's pid and command into the lock file.
// It is only a message for people: the lock itself is the flock.
func recordHolder(f *os.File) {
	if err := f.Truncate(0); err != nil {
		return
	}
	cmd := strings.Join(os.Args[1:], " ")
	if len(cmd) > 200 {
		cmd = cmd[:200]
	}
	fmt.Fprintf(f, "custodian %s (pid %d)\n", cmd, os.Getpid())
}

func readHolder(f *os.File) string {
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, 0)
	holder := strings.TrimSpace(string(buf[:n]))
	if holder == "" {
		return "another process"
	}
	// Whoever can write the data directory writes this text, and it
	// reaches a terminal: shown by the display rules, escaped where it
	// breaks them.
	return warrant.DisplayName(holder)
}

// lockedTPM releases the data directory's lock when the TPM is closed.
type lockedTPM struct {
	transport.TPMCloser
	unlock func()
}

func (t *lockedTPM) Close() error {
	err := t.TPMCloser.Close()
	t.unlock()
	return err
}
