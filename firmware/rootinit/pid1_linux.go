package rootinit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/firmware/config"
	"github.com/custodian-project/custodian/firmware/console"
	"github.com/custodian-project/custodian/firmware/earlyinit"
	"github.com/custodian-project/custodian/firmware/measure"
)

// Options are what the binary's build decides.
type Options struct {
	// Commands are the console's allowlisted subcommands.
	Commands []string
}

// Main runs the root init as PID 1 and never returns.
func Main(opts Options) {
	out := os.Stdout
	err := run(out, opts)
	earlyinit.Report(out, err, "the daemon and the console do not run on this boot")
	earlyinit.Halt()
}

// logger prints the root init's lines on the console until the operator's
// console starts serving, and keeps them in the ring always.
type logger struct {
	mu    sync.Mutex
	w     io.Writer
	ring  *ring
	quiet bool
}

func (l *logger) printf(format string, args ...any) {
	line := fmt.Sprintf(earlyinit.Prefix+format+"\n", args...)
	l.ring.Write([]byte(line))
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.quiet {
		io.WriteString(l.w, line)
	}
}

// hush sends further lines only to the ring.
func (l *logger) hush() {
	l.mu.Lock()
	l.quiet = true
	l.mu.Unlock()
}

func run(out *os.File, opts Options) error {
	log := &logger{w: out, ring: newRing(12)}
	log.printf("root init (PID 1)")
	notes, err := hardenKernel(SysctlDir)
	if err != nil {
		return earlyinit.Fail("closing user namespaces", err, "a kernel with /proc/sys/user/max_user_namespaces")
	}
	for _, n := range notes {
		log.printf("%s", n)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=32m"); err != nil {
		return earlyinit.Fail("mounting /tmp", err, "the root filesystem must have the directory tmp")
	}
	reaper := NewReaper()
	// Only the copy the early init kept of the measured bytes: the root's
	// path could name other bytes once the data partition is mounted.
	cfgPath := filepath.Join(earlyinit.RunDir, measure.ConfigFile)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return earlyinit.Fail("reading the configuration", err, "etc/custodian/config.toml in the image (docs/appliance.md has its keys)")
	}
	log.printf("configuration %s read (the bytes measured into PCR 11)", cfgPath)
	feedWatchdog(log, cfg.Watchdog.Device)
	if err := bringUpNetwork(cfg.Network); err != nil {
		log.printf("FAILED: network: %v; the daemon will not be reachable (check the cable and [network] in the configuration)", err)
	} else {
		log.printf("network: %s %s up", cfg.Network.Interface, cfg.Network.Address)
	}
	if err := prepareDataDir(); err != nil {
		return earlyinit.Fail("preparing "+DataDir+" for the daemon's user", err, "the data partition")
	}
	devices := append([]string{TPMDevice, cfg.Serve.Display}, gpioChips()...)
	for _, d := range devices {
		if err := giveDevice(d); err != nil {
			log.printf("cannot give %s to the daemon's group: %v", d, err)
		}
	}
	l := &launcher{reaper: reaper, devices: devices}
	daemonOut, err := ringPipe(log.ring)
	if err != nil {
		return earlyinit.Fail("making the daemon's log pipe", err, "this is a kernel fault")
	}
	sup := &Supervisor{
		Spawn: func() (Process, error) {
			return l.start(ServeArgs(cfg, DataDir, TPMDevice), DataDir, daemonOut, false)
		},
		Missing:     func() []string { return Missing(DataDir) },
		Log:         log.printf,
		StopTimeout: 30 * time.Second,
		MinBackoff:  time.Second,
		MaxBackoff:  time.Minute,
		Recheck:     30 * time.Second,
	}
	go sup.Run(context.Background())
	quietKernel()
	serveConsole(log, cfg.Console.Device, l, sup, opts)
	return errors.New("the console stopped")
}

// prepareDataDir gives the data directory and its transfer directory to
// the daemon's user. Only these two are changed: walking a tree the user
// can write, as root, could be led along a planted link. Each is opened
// without following a link and changed through its descriptor; a link
// planted in place of transfer/ is refused.
func prepareDataDir() error {
	transfer := filepath.Join(DataDir, "transfer")
	if err := os.Mkdir(transfer, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	for _, d := range []string{DataDir, transfer} {
		if err := giveDir(d); err != nil {
			return err
		}
	}
	if err := giveLock(DataDir); err != nil {
		return err
	}
	return giveTLS(filepath.Join(DataDir, "tls"))
}

// giveDir gives a directory to the daemon's user, mode 0700, without
// following a link at its last component.
func giveDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%s is not a directory (a link or a file is in its place): remove it on another machine", dir)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, DaemonUID, DaemonGID); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return unix.Fchmod(fd, 0o700)
}

// giveLock gives the data directory's lock file back to the daemon's
// user, so a lock root's commands left behind cannot lock the daemon out
// past a reboot. A link in its place is changed itself, never its target.
func giveLock(dir string) error {
	err := unix.Fchownat(unix.AT_FDCWD, filepath.Join(dir, ".lock"), DaemonUID, DaemonGID, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s/.lock: %w", dir, err)
	}
	return nil
}

// giveTLS gives the daemon's TLS files, which the operator writes onto the
// data partition from another machine (as root, or any uid), to the
// daemon's user. It works relative to the directory, opened without
// following a link, and never follows a link at a file: a link planted
// in place of the directory or a file gets nothing.
func giveTLS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil // not set up yet: status says so
	}
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, DaemonUID, DaemonGID); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return err
	}
	for _, f := range []string{TLSCert, TLSKey, TLSClientCA} {
		name := filepath.Base(f)
		err := unix.Fchownat(fd, name, DaemonUID, DaemonGID, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s/%s: %w", dir, name, err)
		}
	}
	return nil
}

// giveDevice lets the daemon's group read and write a device node.
func giveDevice(dev string) error {
	if err := os.Chown(dev, 0, DaemonGID); err != nil {
		return err
	}
	return os.Chmod(dev, 0o660)
}

// quietKernel keeps kernel messages below emergencies off the console, so
// they do not interleave with the operator's session.
func quietKernel() {
	_, _ = unix.Klogctl(unix.SYSLOG_ACTION_CONSOLE_LEVEL, make([]byte, 1))
}

func feedWatchdog(log *logger, dev string) {
	if dev == "" {
		return
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		log.printf("no watchdog at %s (%v): not fed", dev, err)
		return
	}
	log.printf("feeding the watchdog %s", dev)
	// Never closed: a close with "V" would disarm it. When PID 1 stops
	// feeding it, the board resets.
	go func() {
		for {
			_, _ = f.Write([]byte{0})
			time.Sleep(5 * time.Second)
		}
	}()
}

// serveConsole serves the operator's console on dev, reopening it after a
// hang-up.
func serveConsole(log *logger, dev string, l *launcher, sup *Supervisor, opts Options) {
	files := &console.Transfer{Dir: filepath.Join(DataDir, "transfer"), UID: DaemonUID, GID: DaemonGID}
	for {
		f, err := openConsole(dev)
		if err != nil {
			log.printf("cannot open the console %s: %v; retrying", dev, err)
			time.Sleep(10 * time.Second)
			continue
		}
		log.printf("operator console on %s (from now on the daemon's and the init's messages are shown by status)", dev)
		log.hush()
		c := &console.Console{
			In: f, Out: f, Files: files, Runner: l, Daemon: sup,
			DataDir: DataDir, TPM: TPMDevice, Commands: opts.Commands,
			Status: func(w io.Writer) { printMissing(w); log.ring.print(w, "log: ") },
		}
		_ = c.Serve(context.Background())
		f.Close()
		time.Sleep(time.Second)
	}
}

// ringPipe is a pipe whose output the ring keeps: the daemon's stdout and
// stderr.
func ringPipe(r *ring) (*os.File, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(r, pr) }()
	return pw, nil
}

func printMissing(w io.Writer) {
	missing := Missing(DataDir)
	if len(missing) == 0 {
		fmt.Fprintln(w, "setup: complete")
		return
	}
	for _, m := range missing {
		fmt.Fprintf(w, "setup: missing %s\n", m)
	}
}

// openConsole opens the serial device in canonical mode without echo: the
// console's reader gets whole lines, and what the operator types is not
// sent back (a terminal program shows it with local echo).
func openConsole(dev string) (*os.File, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		t.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL
		t.Lflag |= unix.ICANON
		t.Iflag |= unix.ICRNL
		t.Oflag |= unix.OPOST | unix.ONLCR
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, t)
	}
	return os.NewFile(uintptr(fd), dev), nil
}
