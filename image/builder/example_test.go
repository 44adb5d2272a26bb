package builder

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/tests/need"
)

// exampleDir is the appliance example, from this package's directory.
const exampleDir = "../../docs/examples/appliance"

// copyTree copies a directory of regular files and directories.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// prepareExample copies the example, fetches its debs (fetch-debs.sh,
// into the user's cache) and builds the appliance binary for the Pi into
// its root. It returns the manifest's path and the deb directory.
func prepareExample(t *testing.T) (string, string) {
	t.Helper()
	for _, tool := range [][2]string{{"apt-get", "apt"}, {"sha256sum", "coreutils"}} {
		need.Command(t, tool[0], tool[1])
	}
	dir := t.TempDir()
	copyTree(t, exampleDir, dir)
	manifest := filepath.Join(dir, "manifest.toml")
	debs := exampleScript(t, "fetch-debs.sh", manifest)
	bin := filepath.Join(dir, "rootfs", "usr", "bin", "custodian")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath", "-tags", "appliance", "-o", bin, "../../cmd/custodian")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the appliance binary: %v\n%s", err, out)
	}
	// Git keeps no empty directories; the operator puts the courts'
	// root CAs here.
	if err := os.MkdirAll(filepath.Join(dir, "rootfs", "etc", "custodian", "trust"), 0o755); err != nil {
		t.Fatal(err)
	}
	return manifest, debs
}

// exampleScript runs one of the example's scripts with args and returns
// what it printed; a package it cannot download is a missing part, not a
// failure, as for every tool the tests need.
func exampleScript(t *testing.T, script string, args ...string) string {
	t.Helper()
	out, err := exec.Command("sh", append([]string{filepath.Join(exampleDir, script)}, args...)...).Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		if strings.Contains(stderr, "apt-get download") {
			need.Missing(t, "the example's pinned Debian packages cannot be had (%v): %s", err, stderr)
		}
		t.Fatalf("%s: %v\n%s", script, err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// The example's device tree is what make-dtb.sh compiles from its source
// and the pinned Linux tree, and it puts each part the appliance needs
// where the example kernel's drivers look for it: the TPM on SPI0 CE1
// (tpm_tis_spi matches it, spi-bcm2835 its controller), the DS3231 on
// I2C1 (rtc-ds1307 is built into the kernel, i2c-bcm2835 drives the
// bus), and the console on the PL011 UART on GPIO 14/15 with Bluetooth
// gone. The drivers' match tables are read from the kernel package.
func TestExampleDeviceTree(t *testing.T) {
	for _, tool := range [][2]string{{"cpp", "cpp"}, {"dtc", "device-tree-compiler"}, {"fdtget", "device-tree-compiler"}, {"xz", "xz-utils"}, {"dpkg-deb", "dpkg"}} {
		requireTool(t, tool[0], tool[1])
	}
	compiled := filepath.Join(t.TempDir(), "bcm2711-rpi-4-b.dtb")
	exampleScript(t, "make-dtb.sh", compiled)
	checkedIn := filepath.Join(exampleDir, "boot", "bcm2711-rpi-4-b.dtb")
	if !bytes.Equal(readFile(t, compiled), readFile(t, checkedIn)) {
		t.Errorf("%s is stale: run sh docs/examples/appliance/make-dtb.sh docs/examples/appliance/boot/bcm2711-rpi-4-b.dtb", checkedIn)
	}

	const spi, i2c, uart0, uart1 = "/soc/spi@7e204000", "/soc/i2c@7e804000", "/soc/serial@7e201000", "/soc/serial@7e215040"
	for _, c := range []struct{ node, prop, want string }{
		{spi, "status", "okay"},
		{spi + "/tpm@1", "compatible", "infineon,slb9670 tcg,tpm_tis-spi"},
		{spi + "/tpm@1", "reg", "1"},
		{i2c, "status", "okay"},
		{i2c + "/rtc@68", "compatible", "maxim,ds3231"},
		{i2c + "/rtc@68", "reg", "104"},
		{uart0, "status", "okay"},
		{uart1, "status", "disabled"},
		{"/aliases", "serial0", uart0},
		{"/chosen", "stdout-path", "serial0:115200n8"},
	} {
		args := []string{"-t", "s", checkedIn, c.node, c.prop}
		if c.prop == "reg" {
			args = args[2:] // a number
		}
		if got := strings.TrimSpace(run(t, "fdtget", args...)); got != c.want {
			t.Errorf("%s %s = %q, want %q", c.node, c.prop, got, c.want)
		}
	}
	if out := run(t, "fdtget", "-l", checkedIn, uart0); strings.Contains(out, "bluetooth") {
		t.Error("the console UART still has the Bluetooth module on it")
	}
	if out, err := exec.Command("fdtget", checkedIn, uart0, "uart-has-rtscts").CombinedOutput(); err == nil {
		t.Errorf("the console UART still uses RTS/CTS flow control: %s", out)
	}

	debs := exampleScript(t, "fetch-debs.sh", filepath.Join(exampleDir, "manifest.toml"))
	kernel := kernelFiles(t, filepath.Join(debs, "linux-image-6.1.0-57-arm64_6.1.192-3_arm64.deb"), map[string]string{
		"tpm_tis_spi": "./lib/modules/6.1.0-57-arm64/kernel/drivers/char/tpm/tpm_tis_spi.ko",
		"spi-bcm2835": "./lib/modules/6.1.0-57-arm64/kernel/drivers/spi/spi-bcm2835.ko",
		"i2c-bcm2835": "./lib/modules/6.1.0-57-arm64/kernel/drivers/i2c/busses/i2c-bcm2835.ko",
		"vmlinuz":     "./boot/vmlinuz-6.1.0-57-arm64",
	})
	for _, c := range []struct{ file, match string }{
		{"tpm_tis_spi", "alias=of:N*T*Cinfineon,slb9670\x00"},
		{"spi-bcm2835", "alias=of:N*T*Cbrcm,bcm2835-spi\x00"},
		{"i2c-bcm2835", "alias=of:N*T*Cbrcm,bcm2711-i2c\x00"},
		{"vmlinuz", "maxim,ds3231\x00"}, // rtc-ds1307's match table, built in
	} {
		if !bytes.Contains(kernel[c.file], []byte(c.match)) {
			t.Errorf("%s has no %q: the device tree's node would find no driver", c.file, strings.TrimSuffix(c.match, "\x00"))
		}
	}
	if got := strings.TrimSpace(run(t, "fdtget", "-t", "s", checkedIn, spi, "compatible")); got != "brcm,bcm2835-spi" {
		t.Errorf("the SPI controller is %q", got)
	}
	if got := strings.TrimSpace(run(t, "fdtget", "-t", "s", checkedIn, i2c, "compatible")); !strings.HasPrefix(got, "brcm,bcm2711-i2c") {
		t.Errorf("the I2C controller is %q", got)
	}
}

// kernelFiles reads files (name → path in the package) out of a kernel
// package with dpkg-deb and tar.
func kernelFiles(t *testing.T, deb string, files map[string]string) map[string][]byte {
	t.Helper()
	dir := t.TempDir()
	args := []string{"-c", `deb=$1 dir=$2; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" "$@"`, "sh", deb, dir}
	for _, p := range files {
		args = append(args, p)
	}
	run(t, "sh", args...)
	out := map[string][]byte{}
	for name, p := range files {
		out[name] = readFile(t, filepath.Join(dir, p))
	}
	return out
}

// The example manifest builds a Pi 4 image from Debian's kernel and Pi
// firmware packages, and standard tools read every part of it: the GPT
// (fdisk), the FAT file systems (fsck.vfat, mtools), the root (unsquashfs),
// the data partition (e2fsck); the initramfs holds exactly the binary, the
// manifest and the modules in order; the image predicts the manifest's
// policy.
func TestExampleApplianceImage(t *testing.T) {
	for _, tool := range [][2]string{{"fdisk", "fdisk"}, {"fsck.vfat", "dosfstools"}, {"mdir", "mtools"}, {"unsquashfs", "squashfs-tools"}, {"e2fsck", "e2fsprogs"}} {
		requireTool(t, tool[0], tool[1])
	}
	manifest, debs := prepareExample(t)
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "custodian.img")
	opt := Options{TargetSoC: "2711", DebDir: debs, KernelOut: filepath.Join(dir, "kernel8.img"), InitramfsOut: filepath.Join(dir, "initramfs.img"), UpdateOut: filepath.Join(dir, "custodian.update")}
	start := time.Now()
	if err := Build(m, img, opt); err != nil {
		t.Fatal(err)
	}
	info, _ := os.Stat(img)
	upd, _ := os.Stat(opt.UpdateOut)
	data := partitions(t, img)[layout.DataPartition-1].size * 512
	t.Logf("built the example in %v: %d MiB; update file %d KiB; data partition %d MiB", time.Since(start), info.Size()>>20, upd.Size()>>10, data>>20)
	if upd.Size()+dataReserveMiB*mib > data {
		t.Errorf("the update file (%d MiB) does not fit the data partition (%d MiB) beside the ledger's %d MiB", upd.Size()>>20, data>>20, dataReserveMiB)
	}

	out := strings.Join(strings.Fields(run(t, "fdisk", "-l", "-o", "Device,Name", img)), " ")
	for n := 1; n <= layout.PartitionCount; n++ {
		if want := img + strconv.Itoa(n) + " " + layout.PartitionName(n); !strings.Contains(out, want) {
			t.Errorf("fdisk -l lacks %q: %s", want, out)
		}
	}
	parts := map[int]string{}
	for _, p := range partitions(t, img) {
		parts[p.n] = filepath.Join(dir, strconv.Itoa(p.n)+".part")
		run(t, "dd", "if="+img, "of="+parts[p.n], "bs=512", "skip="+strconv.FormatInt(p.start, 10), "count="+strconv.FormatInt(p.size, 10), "status=none")
	}
	for _, n := range []int{1, 2, 3} {
		run(t, "fsck.vfat", "-n", parts[n])
	}
	bootImg, _ := readBootPartition(t, img)
	inner := filepath.Join(dir, BootImgName)
	if err := os.WriteFile(inner, bootImg, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "fsck.vfat", "-n", inner)
	got := strings.Fields(run(t, "mdir", "-b", "-i", inner, "-/", "::"))
	want := []string{"::/bcm2711-rpi-4-b.dtb", "::/cmdline.txt", "::/config.txt", "::/custodian.toml", "::/fixup4.dat", "::/initramfs.img", "::/kernel8.img", "::/start4.elf"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("boot.img holds %v, want %v", got, want)
	}
	kernel := readFATFile(t, inner, KernelName)
	if len(kernel) < 64 || string(kernel[56:60]) != "ARM\x64" {
		t.Error("kernel8.img is not an arm64 Image")
	}
	if dtb := readFATFile(t, inner, "bcm2711-rpi-4-b.dtb"); binary.BigEndian.Uint32(dtb) != 0xd00dfeed {
		t.Error("the device tree has no FDT magic")
	}
	if ext, _ := os.ReadFile(opt.KernelOut); !bytes.Equal(ext, kernel) {
		t.Error("--kernel-out differs from boot.img's kernel8.img")
	}

	sq := run(t, "unsquashfs", "-s", parts[4])
	if !strings.Contains(sq, "Compression gzip") {
		t.Errorf("the root is not gzip-compressed:\n%s", sq)
	}
	if out := run(t, "unsquashfs", "-lln", parts[4]); !strings.Contains(out, "squashfs-root/usr/bin/custodian") {
		t.Errorf("unsquashfs lists no custodian binary:\n%s", out)
	}
	if out := run(t, "e2fsck", "-fn", parts[6]); !strings.Contains(out, "custodian-data: 11/") {
		t.Errorf("e2fsck of the data partition:\n%s", out)
	}

	initramfs, _ := os.ReadFile(opt.InitramfsOut)
	entries := readInitramfs(t, initramfs, m.SourceDateEpoch)
	wantNames := []string{"init", "custodian.toml", "root.sha256", "modules", "modules/order"}
	var order []string
	for _, s := range m.Initramfs.Modules {
		src, _ := image.ParseSource(s)
		order = append(order, filepath.Base(src.Path))
		wantNames = append(wantNames, "modules/"+filepath.Base(src.Path))
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.name)
	}
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Fatalf("initramfs holds %v, want %v", names, wantNames)
	}
	if list := cpioList(t, initramfs); list != strings.Join(wantNames, " ") {
		t.Errorf("cpio -t lists %q, want %v", list, wantNames)
	}
	if entries[4].data != strings.Join(order, "\n")+"\n" {
		t.Errorf("modules/order is %q", entries[4].data)
	}
	if entries[2].data != string(rootPinOf(t, img).Marshal()) {
		t.Errorf("root.sha256 is %q, want the pin of slot A's root", entries[2].data)
	}
	bin, _ := os.ReadFile(filepath.Join(filepath.Dir(manifest), "rootfs", "usr", "bin", "custodian"))
	if entries[0].data != string(bin) {
		t.Error("/init is not the root's custodian binary")
	}
	if f, err := elf.NewFile(bytes.NewReader(bin)); err != nil || f.Machine != elf.EM_AARCH64 {
		t.Errorf("/init is not an arm64 ELF: %v", err)
	}
	for _, e := range entries[5:] {
		if f, err := elf.NewFile(strings.NewReader(e.data)); err != nil || f.Machine != elf.EM_AARCH64 || f.Section(".modinfo") == nil {
			t.Errorf("%s is not an arm64 kernel module: %v", e.name, err)
		}
	}

	imagePredictsManifest(t, img, m, debs)
}

func readFile(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
