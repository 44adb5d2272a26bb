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
	cmd := exec.Command("sh", filepath.Join(dir, "fetch-debs.sh"), manifest)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		need.Missing(t, "the example's pinned Debian packages cannot be had (%v): %s", err, strings.TrimSpace(stderr))
	}
	debs := strings.TrimSpace(string(out))
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
