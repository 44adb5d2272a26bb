package earlyinit

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/image"
)

// requireLoop skips where this machine cannot attach loop devices (not
// root, or a container without /dev/loop-control); the emulated boot
// (TestApplianceBootsMeasuresAndReleases) runs the same code as PID 1.
func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("attaching a loop device needs root; the emulated boot test covers this path")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no /dev/loop-control here (%v); the emulated boot test covers this path", err)
	}
}

// detach frees the loop device name.
func detach(t *testing.T, name string) {
	f, err := os.Open(name)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
		t.Errorf("detaching %s: %v", name, err)
	}
}

// The loop device serves exactly the pinned bytes, read-only, even when
// the partition is larger; a partition whose bytes differ from the pin in
// one byte gets no loop device.
func TestInvariantRootServedOnlyFromTheCheckedCopy(t *testing.T) {
	requireLoop(t)
	root := make([]byte, 64<<10)
	rand.Read(root)
	part := filepath.Join(t.TempDir(), "root-a")
	if err := os.WriteFile(part, append(bytes.Clone(root), make([]byte, 8192)...), 0o600); err != nil {
		t.Fatal(err)
	}
	pin := image.PinRoot(root)
	name, err := copyPinnedRoot(console{io.Discard}, "the test root", part, pin)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		t.Skipf("this machine refuses loop devices (%v); the emulated boot test covers this path", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer detach(t, name)
	// The card changes after the check: the loop device still serves the copy.
	changed := bytes.Clone(root)
	changed[100] ^= 0xff
	if err := os.WriteFile(part, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	served, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served, root) {
		t.Errorf("%s serves %d bytes that are not the checked root", name, len(served))
	}
	if f, err := os.Open(name); err != nil {
		t.Error(err)
	} else {
		ro, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKROGET)
		f.Close()
		if err != nil || ro != 1 {
			t.Errorf("%s is not read-only (BLKROGET %d, %v)", name, ro, err)
		}
	}

	var mismatch *image.RootMismatchError
	if name, err := copyPinnedRoot(console{io.Discard}, "the test root", part, pin); !errors.As(err, &mismatch) {
		if err == nil {
			detach(t, name)
		}
		t.Errorf("a root changed in one byte: %v", err)
	}
}

// The copy is sealed before it is checked: neither a write nor a change
// of size reaches it afterwards.
func TestInvariantRootCopyIsSealedBeforeItIsChecked(t *testing.T) {
	mem, err := sealedCopy(bytes.NewReader([]byte("root bytes")), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if _, err := mem.WriteAt([]byte("x"), 0); err == nil {
		t.Error("the sealed copy took a write")
	}
	if err := mem.Truncate(2); err == nil {
		t.Error("the sealed copy shrank")
	}
	if _, err := mem.WriteAt([]byte("x"), 4); err == nil {
		t.Error("the sealed copy grew")
	}
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, 0); err == nil {
		t.Error("the seals can still be changed")
	}
	got, err := io.ReadAll(io.NewSectionReader(mem, 0, 100))
	if err != nil || string(got) != "root" {
		t.Errorf("the copy holds %q (%v), want the first 4 bytes", got, err)
	}
}

// loadRootPin refuses a missing, malformed or oversized pin, naming the
// file and what to do.
func TestLoadRootPinRefusals(t *testing.T) {
	dir := t.TempDir()
	good := image.PinRoot(make([]byte, image.RootAlign)).Marshal()
	for name, data := range map[string][]byte{
		"missing":   nil,
		"malformed": []byte("not a pin\n"),
		"oversized": bytes.Repeat(good, 10),
	} {
		file := filepath.Join(dir, name)
		if data != nil {
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		_, err := loadRootPin(file)
		var f *Failure
		if !errors.As(err, &f) || !strings.Contains(f.What, file) || !strings.Contains(f.Check, "rebuild") {
			t.Errorf("%s: %v", name, err)
		}
	}
	file := filepath.Join(dir, "good")
	if err := os.WriteFile(file, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadRootPin(file); err != nil {
		t.Error(err)
	}
}

// A root that would leave too little memory is refused before it is
// copied, with the sizes; MemAvailable is read as the kernel writes it.
func TestCheckMemory(t *testing.T) {
	meminfo := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(meminfo, []byte("MemTotal:        1000000 kB\nMemFree:          500000 kB\nMemAvailable:     350000 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkMemory(64<<20, meminfo); err != nil {
		t.Errorf("64 MiB of 341 MiB available: %v", err)
	}
	if err := checkMemory(image.MaxRootBytes, meminfo); err == nil || !strings.Contains(err.Error(), "only 341 MiB are available") {
		t.Errorf("128 MiB of 341 MiB available: %v", err)
	}
	if err := checkMemory(4096, "/nonexistent/meminfo"); err == nil {
		t.Error("no meminfo accepted")
	}
}

// Each stage of getting the root fails with its own message: a failed
// read is not reported as a root that does not match its pin.
func TestRootCopyFailuresNameTheirStage(t *testing.T) {
	pin := image.PinRoot(make([]byte, image.RootAlign))
	_, err := copyPinnedRoot(console{io.Discard}, "the test root", filepath.Join(t.TempDir(), "no-such-partition"), pin)
	var f *Failure
	if !errors.As(err, &f) || !strings.HasPrefix(f.What, "copying the test root into memory") {
		t.Errorf("a partition that cannot be read: %v", err)
	}
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = copyPinnedRoot(console{io.Discard}, "the test root", short, pin)
	if !errors.As(err, &f) || !strings.HasPrefix(f.What, "the test root is not the root its boot image pins") || !strings.Contains(err.Error(), "holds 100 bytes") {
		t.Errorf("a partition shorter than the pin: %v", err)
	}
}
