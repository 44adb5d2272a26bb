package earlyinit

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
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
	name, err := copyPinnedRoot(part, pin)
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
	if f, err := os.OpenFile(name, os.O_WRONLY, 0); err == nil {
		_, err = f.Write([]byte("x"))
		f.Close()
		if err == nil {
			t.Errorf("%s is writable", name)
		}
	}

	var mismatch *image.RootMismatchError
	if name, err := copyPinnedRoot(part, pin); !errors.As(err, &mismatch) {
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
