package earlyinit

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/tpm"
)

// Paths of the early init's world: the initramfs, and the root it switches to.
const (
	ManifestPath = "/" + image.ManifestName
	ModulesDir   = "/modules"
	Sysroot      = "/sysroot"
	TPMDevice    = "/dev/tpmrm0"
	RTCDevice    = "/dev/rtc0"
	RunDir       = "/run/custodian" // measure-boot's event log and marker
	RootInit     = "/usr/bin/custodian"
)

// TPMWait bounds the wait for the TPM driver to probe.
const TPMWait = 30 * time.Second

// Main runs the early init as PID 1 and never returns: it executes the
// root's init, or halts after printing why.
func Main() {
	err := run(console{os.Stdout})
	if err == nil {
		err = errors.New("the root init returned")
	}
	PrintFailure(os.Stdout, err)
	Halt()
}

// Halt stops here forever, keeping PID 1 alive (its exit would panic the
// kernel). Sleeping keeps the Go runtime from declaring a deadlock.
func Halt() {
	unix.Sync()
	for {
		time.Sleep(time.Hour)
	}
}

func run(c console) error {
	c.printf("custodian early init (PID 1): measured boot")
	if err := mountEarly(); err != nil {
		return err
	}
	reopenConsole()
	c.printf("mounted /dev /proc /sys /run")
	m, err := image.LoadManifest(ManifestPath)
	if err != nil {
		return fail("reading the image manifest "+ManifestPath, err, "the boot image is built by custodian image build; rebuild and sign it")
	}
	if err := loadModules(c); err != nil {
		return err
	}
	if err := setClock(c, m.Epoch()); err != nil {
		return err
	}
	pin, err := loadRootPin(RootPinPath)
	if err != nil {
		return err
	}
	if err := waitTPM(c); err != nil {
		return err
	}
	slot, err := mountRoot(c, pin)
	if err != nil {
		return err
	}
	if err := measureRoot(c, m, slot); err != nil {
		return err
	}
	if err := mountData(c); err != nil {
		return err
	}
	if err := switchRoot(c); err != nil {
		return err
	}
	c.printf("starting the root init %s of slot %s", RootInit, slot)
	err = unix.Exec(RootInit, []string{RootInit}, os.Environ())
	return fail("starting the root init "+RootInit, err, "the root filesystem must hold the custodian binary at usr/bin/custodian")
}

func mountEarly() error {
	mounts := []struct {
		fstype, target string
		flags          uintptr
		data           string
	}{
		{"devtmpfs", "/dev", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0755"},
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"tmpfs", "/run", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0755,size=16m"},
	}
	for _, mt := range mounts {
		if err := os.MkdirAll(mt.target, 0o755); err != nil {
			return fail("creating "+mt.target, err, "the initramfs is a writable rootfs; this is a kernel fault")
		}
		if err := unix.Mount(mt.fstype, mt.target, mt.fstype, mt.flags, mt.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fail("mounting "+mt.fstype+" on "+mt.target, err, "the kernel needs CONFIG_DEVTMPFS, CONFIG_PROC_FS, CONFIG_SYSFS and CONFIG_TMPFS")
		}
	}
	return nil
}

// reopenConsole makes fds 0-2 the console of devtmpfs, in case the kernel
// found no /dev/console in the initramfs and started init without them.
func reopenConsole() {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	for fd := range 3 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			_ = unix.Dup3(int(f.Fd()), fd, 0)
		}
	}
}

func loadModules(c console) error {
	loaded, present, err := LoadModules(ModulesDir, "/sys/module", finitModule)
	if err != nil {
		return fail("loading kernel modules", err, "the modules in the initramfs must be built for this kernel ("+kernelRelease()+"), listed in /modules/order after the modules they depend on")
	}
	c.printf("modules: loaded %s; already present %s", listOrNone(loaded), listOrNone(present))
	return nil
}

func finitModule(path string, compressed bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if compressed {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if errors.Is(err, unix.EEXIST) {
		return ErrModuleExists
	}
	return err
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, " ")
}

func setClock(c console, built time.Time) error {
	const check = "the DS3231 RTC (dtoverlay=i2c-rtc,ds3231) and its battery; set it on another machine with hwclock --systohc"
	f, err := os.Open(RTCDevice)
	if err != nil {
		return fail("reading the clock: no RTC at "+RTCDevice, err, check)
	}
	defer f.Close()
	r, err := unix.IoctlGetRTCTime(int(f.Fd()))
	if err != nil {
		return fail("reading the clock from "+RTCDevice, err, check)
	}
	now, err := RTCTime{Sec: int(r.Sec), Min: int(r.Min), Hour: int(r.Hour), Mday: int(r.Mday), Mon: int(r.Mon), Year: int(r.Year)}.Time()
	if err == nil {
		err = CheckClock(now, built)
	}
	if err != nil {
		return fail("the clock from "+RTCDevice, err, check)
	}
	tv := unix.NsecToTimeval(now.UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		return fail("setting the system clock", err, "this is a kernel fault")
	}
	c.printf("clock set from %s: %s", RTCDevice, now.Format(time.RFC3339))
	return nil
}

func waitTPM(c console) error {
	deadline := time.Now().Add(TPMWait)
	for {
		_, err := os.Stat(TPMDevice)
		if err == nil {
			c.printf("TPM %s is ready", TPMDevice)
			return nil
		}
		if time.Now().After(deadline) {
			return fail(fmt.Sprintf("waiting %s for the TPM", TPMWait), err,
				"the TPM module (tpm_tis_spi on the Pi: dtparam=spi=on, dtoverlay=tpm-slb9670) in /modules/order, and that the TPM board is seated")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mountRoot(c console, pin image.RootPin) (layout.Slot, error) {
	slot, n, src, err := BootSlot("/proc")
	if err != nil {
		return 0, fail("finding the boot slot", err, "the firmware's autoboot.txt, or custodian.boot_partition=2 or 3 in cmdline.txt")
	}
	c.printf("booted slot %s (boot partition %d, from %s)", slot, n, src)
	p, err := partition(slot.RootPartition())
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(Sysroot, 0o755); err != nil {
		return 0, fail("creating "+Sysroot, err, "this is a kernel fault")
	}
	loop, err := copyPinnedRoot(c, fmt.Sprintf("the root of slot %s (%s, /dev/%s)", slot, p.Name, p.Dev), "/dev/"+p.Dev, pin)
	if err != nil {
		return 0, err
	}
	if err := unix.Mount(loop, Sysroot, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return 0, fail("mounting the root of slot "+slot.String()+" ("+loop+")", err, "the squashfs module in /modules/order")
	}
	c.printf("mounted the root of slot %s read-only at %s (its checked copy, %s)", slot, Sysroot, loop)
	return slot, nil
}

func partition(n int) (Partition, error) {
	parts, err := Partitions("/sys/class/block")
	if err == nil {
		var p Partition
		if p, err = FindPartition(parts, n); err == nil {
			return p, nil
		}
	}
	return Partition{}, fail("finding partition "+layout.PartitionName(n), err,
		"that the appliance disk is the only custodian disk attached and was written by custodian image build (GPT names custodian-*), and that its driver is in the kernel or /modules/order")
}

func measureRoot(c console, m *image.Manifest, slot layout.Slot) error {
	const what = "measuring the root of slot "
	t, err := tpm.Open(TPMDevice)
	if err != nil {
		return fail(what+slot.String(), err, "the TPM at "+TPMDevice)
	}
	defer t.Close()
	spec := m.Spec()
	events, err := measure.Boot(t, spec, os.DirFS(Sysroot), RunDir)
	if err != nil {
		return fail(what+slot.String(), err, "that the root matches its manifest (custodian image build wrote both); a PCR already extended means something measured before this init")
	}
	var parts []string
	for _, e := range events {
		parts = append(parts, fmt.Sprintf("PCR %d %s %s", e.PCR, e.Kind, e.Name))
	}
	c.printf("measured the root of slot %s: %s", slot, strings.Join(parts, ", "))
	values, err := tpm.ReadPCRs(t, spec.PCRs()...)
	if err != nil {
		return fail("reading the PCRs back", err, "the TPM at "+TPMDevice)
	}
	for _, i := range spec.PCRs() {
		c.printf("PCR %d = %x", i, values[i])
	}
	return nil
}

func mountData(c console) error {
	p, err := partition(layout.DataPartition)
	if err != nil {
		return err
	}
	target := Sysroot + layout.DataMount
	if err := unix.Mount("/dev/"+p.Dev, target, "ext4", unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_RELATIME, ""); err != nil {
		return fail("mounting the data partition /dev/"+p.Dev+" at "+layout.DataMount, err,
			"that the root has the directory "+strings.TrimPrefix(layout.DataMount, "/")+" and the data partition is ext4 (custodian image build makes it); the kernel log says more")
	}
	c.printf("mounted the data partition (%s, /dev/%s) at %s", p.Name, p.Dev, layout.DataMount)
	return nil
}

// switchRoot moves the early mounts into the new root and makes it /, as
// switch_root does: MS_MOVE of the new root onto /, then chroot. The
// initramfs's own files are removed first; they are the only thing left
// in the old root's memory.
func switchRoot(c console) error {
	for _, dir := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := unix.Mount(dir, Sysroot+dir, "", unix.MS_MOVE, ""); err != nil {
			return fail("moving "+dir+" into the root", err, "the root filesystem must have the empty directories dev proc sys run tmp")
		}
	}
	freeInitramfs()
	steps := []struct {
		what string
		do   func() error
	}{
		{"entering " + Sysroot, func() error { return unix.Chdir(Sysroot) }},
		{"moving " + Sysroot + " onto /", func() error { return unix.Mount(".", "/", "", unix.MS_MOVE, "") }},
		{"changing the root", func() error { return unix.Chroot(".") }},
		{"entering the new root", func() error { return unix.Chdir("/") }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fail(s.what, err, "this is a kernel fault")
		}
	}
	c.printf("switched to the root of the booted slot")
	return nil
}

// freeInitramfs removes what the initramfs holds, so its memory returns to
// the system; a failure costs only memory.
func freeInitramfs() {
	_ = os.RemoveAll(ModulesDir)
	_ = os.Remove(ManifestPath)
	_ = os.Remove(RootPinPath)
	_ = os.Remove("/init")
}
