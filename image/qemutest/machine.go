// Package qemutest boots the appliance's kernel in an emulated arm64
// machine for tests: qemu-system-aarch64 -M virt (cortex-a57, no KVM) with
// swtpm as its TPM behind QEMU's tpm-tis-device, the disk image on
// virtio-blk, user networking that forwards a host port to the daemon,
// and the serial console (ttyAMA0) on QEMU's stdio.
//
// A Machine reads the console and keeps every byte: tests wait for marker
// lines with a time limit (QEMU exits 0 even when /init fails, so only
// the console tells), and write to it to drive the operator's console
// (Console). The console log is saved in $CUSTODIAN_ARTIFACTS when set,
// else in the test's artifact directory (go test -artifacts keeps it);
// its tail is logged when the test fails. QEMU and swtpm are killed when
// the test ends.
//
// Debian's arm64 kernel and tpm_tis.ko built for it come from .ci/kernel
// (RequireKernel). What only a real Pi shows (the SPI TPM, the GPIO
// button, the firmware's boot.img signature check, tryboot, the RTC) is
// out of reach here.
package qemutest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custodian-project/custodian/tests/need"
	"github.com/custodian-project/custodian/tpm/swtpm"
)

// ArtifactsEnv names a directory where console logs are kept after the
// test (CI uploads it).
const ArtifactsEnv = "CUSTODIAN_ARTIFACTS"

// Config is what one boot runs.
type Config struct {
	Kernel  string // the kernel image (-kernel)
	Initrd  string // the initramfs (-initrd), optional
	Append  string // the kernel command line; console=ttyAMA0 is added
	Disk    string // a raw disk image on virtio-blk, optional
	Forward int    // a guest TCP port reached from the host (Machine.Addr), 0 for no network
	Memory  int    // MiB, 1024 when zero
	// TPMDir holds the swtpm's state; empty for a new TPM in a
	// temporary directory. A directory from an earlier boot keeps the
	// TPM (its EK, NV and persistent objects) across boots.
	TPMDir string
}

// Machine is one running emulated machine.
type Machine struct {
	TPM  *swtpm.Process
	Addr string // host address of the forwarded port, when Config.Forward is set

	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	exited  chan struct{}

	mu      sync.Mutex
	out     []byte        // the console so far, without carriage returns
	pos     int           // how much of out the test has consumed
	changed chan struct{} // closed and replaced when out grows
}

// Boot starts swtpm and QEMU. Both are killed when the test ends.
func Boot(t testing.TB, cfg Config) *Machine {
	t.Helper()
	need.Command(t, "qemu-system-aarch64", "qemu-system-arm")
	if err := swtpm.Installed(); err != nil {
		need.Missing(t, "%v (make test installs it from Debian's swtpm and swtpm-tools)", err)
	}
	tpmDir := cfg.TPMDir
	if tpmDir == "" {
		tpmDir = t.TempDir()
	}
	var sw *swtpm.Process
	var err error
	if _, statErr := os.Stat(filepath.Join(tpmDir, "state")); statErr == nil {
		sw, err = swtpm.RestartForVM(tpmDir)
	} else {
		sw, err = swtpm.StartForVM(tpmDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Stop)
	m := &Machine{TPM: sw, t: t, exited: make(chan struct{}), changed: make(chan struct{})}
	args := qemuArgs(cfg, sw.CtrlSocket)
	if cfg.Forward != 0 {
		port, err := swtpm.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		m.Addr = "127.0.0.1:" + strconv.Itoa(port)
		args = append(args,
			"-netdev", fmt.Sprintf("user,id=net0,hostfwd=tcp:%s-:%d", m.Addr, cfg.Forward),
			"-device", "virtio-net-device,netdev=net0")
	} else {
		args = append(args, "-nic", "none")
	}
	m.cmd = exec.Command("qemu-system-aarch64", args...)
	m.cmd.Stderr = &lockedWriter{m: m}
	m.stdin, err = m.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	artifacts := artifactDir(t)
	m.logPath = filepath.Join(artifacts, "console.log")
	log, err := os.Create(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	// The command line, to run the same boot by hand.
	if err := os.WriteFile(filepath.Join(artifacts, "qemu.args"), []byte(strings.Join(m.cmd.Args, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("starting qemu-system-aarch64: %v", err)
	}
	go m.read(stdout, log)
	t.Cleanup(m.stop)
	return m
}

func qemuArgs(cfg Config, tpmSocket string) []string {
	memory := cfg.Memory
	if memory == 0 {
		memory = 1024
	}
	args := []string{
		"-M", "virt", "-cpu", "cortex-a57", "-m", strconv.Itoa(memory),
		"-nographic", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", cfg.Kernel,
		"-append", strings.TrimSpace("console=ttyAMA0 panic=-1 " + cfg.Append),
		"-chardev", "socket,id=chrtpm,path=" + tpmSocket,
		"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
		"-device", "tpm-tis-device,tpmdev=tpm0",
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	if cfg.Disk != "" {
		args = append(args,
			"-drive", "if=none,id=disk0,format=raw,file="+cfg.Disk,
			"-device", "virtio-blk-device,drive=disk0")
	}
	return args
}

// artifactDir is $CUSTODIAN_ARTIFACTS/TESTNAME when set, else the test's
// artifact directory.
func artifactDir(t testing.TB) string {
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		return t.ArtifactDir()
	}
	dir = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// read copies the console into m.out and the log until QEMU closes it.
func (m *Machine) read(stdout io.Reader, log *os.File) {
	defer close(m.exited)
	defer log.Close()
	buf := make([]byte, 4096)
	for {
		n, err := stdout.Read(buf)
		if n > 0 {
			chunk := bytes.ReplaceAll(buf[:n], []byte("\r"), nil)
			_, _ = log.Write(chunk)
			m.append(chunk)
		}
		if err != nil {
			_ = m.cmd.Wait()
			return
		}
	}
}

func (m *Machine) append(p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.out = append(m.out, p...)
	close(m.changed)
	m.changed = make(chan struct{})
}

// lockedWriter puts QEMU's own messages (stderr) into the console record.
type lockedWriter struct{ m *Machine }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.m.append(append([]byte("[qemu] "), p...))
	return len(p), nil
}

// stop kills QEMU and logs the console's tail when the test failed.
func (m *Machine) stop() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
	}
	<-m.exited
	if m.t.Failed() {
		m.t.Logf("console (whole log in %s), last lines:\n%s", m.logPath, m.tail(40))
	}
}

func (m *Machine) tail(lines int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := strings.Split(strings.TrimRight(string(m.out), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// ErrExited is returned by waits that end because QEMU exited.
var ErrExited = errors.New("the machine powered off")

// wait calls match on the unconsumed console output until it reports a
// match (and how many bytes it consumed), QEMU exits, or the time is up.
func (m *Machine) wait(limit time.Duration, match func(unread []byte) (int, bool)) error {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		m.mu.Lock()
		n, ok := match(m.out[m.pos:])
		if ok {
			m.pos += n
		}
		changed := m.changed
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-m.exited:
			m.mu.Lock()
			n, ok := match(m.out[m.pos:])
			if ok {
				m.pos += n
			}
			m.mu.Unlock()
			if ok {
				return nil
			}
			return ErrExited
		case <-timer.C:
			return fmt.Errorf("nothing matched within %v", limit)
		}
	}
}

// WaitFor consumes the console up to and including the first occurrence
// of s and returns what came before it.
func (m *Machine) WaitFor(s string, limit time.Duration) (string, error) {
	var before string
	err := m.wait(limit, func(unread []byte) (int, bool) {
		i := bytes.Index(unread, []byte(s))
		if i < 0 {
			return 0, false
		}
		before = string(unread[:i])
		return i + len(s), true
	})
	if err != nil {
		return "", fmt.Errorf("waiting for %q on the console: %w", s, err)
	}
	return before, nil
}

// WaitLine consumes the console through the first whole line matching re
// and returns the line's submatches.
func (m *Machine) WaitLine(re *regexp.Regexp, limit time.Duration) ([]string, error) {
	var found []string
	err := m.wait(limit, func(unread []byte) (int, bool) {
		start := 0
		for {
			end := bytes.IndexByte(unread[start:], '\n')
			if end < 0 {
				return 0, false
			}
			line := string(unread[start : start+end])
			if sub := re.FindStringSubmatch(line); sub != nil {
				found = sub
				return start + end + 1, true
			}
			start += end + 1
		}
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for a console line matching %q: %w", re, err)
	}
	return found, nil
}

// Expect is WaitLine that fails the test.
func (m *Machine) Expect(re *regexp.Regexp, limit time.Duration) []string {
	m.t.Helper()
	sub, err := m.WaitLine(re, limit)
	if err != nil {
		m.t.Fatal(err)
	}
	return sub
}

// Write sends s to the console.
func (m *Machine) Write(s string) error {
	_, err := io.WriteString(m.stdin, s)
	return err
}

// PowerCut ends the machine as pulling the plug would: QEMU is killed and
// its swtpm stopped (NV and persistent objects stay in its state
// directory; PCRs and sessions are gone). Boot with Config.TPMDir set to
// m.TPM.Dir and the same disk powers it on again.
func (m *Machine) PowerCut() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Kill()
	}
	<-m.exited
	m.TPM.Stop()
}

// WaitExit waits for QEMU to exit.
func (m *Machine) WaitExit(limit time.Duration) error {
	select {
	case <-m.exited:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("the machine still runs after %v", limit)
	}
}
