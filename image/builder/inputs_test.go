package builder

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	diskfs "github.com/diskfs/go-diskfs"

	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/deb/debtest"
	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/image/layout"
)

// cpioEntry is what a test checks of one initramfs entry.
type cpioEntry struct {
	name string
	mode cpio.FileMode
	data string
}

// readInitramfs lists a gzip-compressed newc cpio, checking owners and
// times on the way; cpioList cross-checks with GNU cpio.
func readInitramfs(t *testing.T, data []byte, epoch int64) []cpioEntry {
	t.Helper()
	z, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(z)
	var out []cpioEntry
	for {
		hdr, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Guid != 0 || hdr.ModTime.Unix() != epoch {
			t.Errorf("%s: owner %d:%d, time %v", hdr.Name, hdr.Uid, hdr.Guid, hdr.ModTime)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cpioEntry{hdr.Name, hdr.Mode, string(body)})
	}
}

// The initramfs holds exactly /init (the root's measured binary),
// /custodian.toml (the manifest), /root.sha256 (the pin of slot A's
// root), /modules/order and the modules in the manifest's order; boot.img holds the same initramfs and kernel that
// --initramfs-out and --kernel-out get, and the same manifest at its top.
func TestInitramfsHoldsExactly(t *testing.T) {
	manifest := imagetest.Write(t)
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opt := Options{KernelOut: filepath.Join(dir, "kernel"), InitramfsOut: filepath.Join(dir, "initramfs")}
	img := filepath.Join(dir, "custodian.img")
	if err := Build(m, img, opt); err != nil {
		t.Fatal(err)
	}
	initramfs, _ := os.ReadFile(opt.InitramfsOut)
	kernel, _ := os.ReadFile(opt.KernelOut)
	got := readInitramfs(t, initramfs, m.SourceDateEpoch)
	want := []cpioEntry{
		{"init", cpio.TypeReg | 0o755, imagetest.Files["rootfs/usr/bin/custodian"].Data},
		{"custodian.toml", cpio.TypeReg | 0o644, imagetest.Manifest},
		{"root.sha256", cpio.TypeReg | 0o644, string(rootPinOf(t, img).Marshal())},
		{"modules", cpio.TypeDir | 0o755, ""},
		{"modules/order", cpio.TypeReg | 0o644, "tpm_tis_core.ko\ntpm_tis.ko\n"},
		{"modules/tpm_tis_core.ko", cpio.TypeReg | 0o644, imagetest.Files["boot/tpm_tis_core.ko"].Data},
		{"modules/tpm_tis.ko", cpio.TypeReg | 0o644, imagetest.Files["boot/tpm_tis.ko"].Data},
	}
	if len(got) != len(want) {
		t.Fatalf("initramfs holds %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if string(kernel) != imagetest.Files["boot/kernel8.img"].Data {
		t.Errorf("--kernel-out got %q", kernel)
	}
	if list := cpioList(t, initramfs); list != "init custodian.toml root.sha256 modules modules/order modules/tpm_tis_core.ko modules/tpm_tis.ko" {
		t.Errorf("cpio -t lists %q", list)
	}
	inBoot := bootImgFile(t, img, image.InitramfsName)
	if !bytes.Equal(inBoot, initramfs) {
		t.Error("boot.img's initramfs.img differs from --initramfs-out")
	}
	// The prediction from an image reads boot.img's own copy.
	if top := bootImgFile(t, img, image.ManifestName); string(top) != imagetest.Manifest {
		t.Errorf("boot.img's %s differs from the initramfs's", image.ManifestName)
	}
}

// rootPinOf pins slot A's root as it sits in img: the squashfs's own
// size (its superblock's bytes_used, padded as the builder pads it), so
// the pin is computed apart from the builder's.
func rootPinOf(t *testing.T, img string) image.RootPin {
	t.Helper()
	p := partitions(t, img)[layout.SlotA.RootPartition()-1]
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	root := data[p.start*512 : (p.start+p.size)*512]
	if string(root[:4]) != "hsqs" {
		t.Fatal("slot A's root partition does not start with a squashfs superblock")
	}
	used := int64(binary.LittleEndian.Uint64(root[40:48]))
	size := (used + 4095) &^ 4095
	if bytes.Count(root[size:], []byte{0}) != len(root[size:]) {
		t.Fatalf("slot A's root partition has data past the squashfs's %d bytes", size)
	}
	return image.PinRoot(root[:size])
}

// bootImgFile reads one file from boot.img on slot A's boot partition.
func bootImgFile(t *testing.T, img, name string) []byte {
	t.Helper()
	bootImg, _ := readBootPartition(t, img)
	file := filepath.Join(t.TempDir(), BootImgName)
	if err := os.WriteFile(file, bootImg, 0o600); err != nil {
		t.Fatal(err)
	}
	return readFATFile(t, file, name)
}

// withDeb writes the test inputs with the kernel, the device tree and a
// module taken from a deb instead of host files, and returns the
// manifest's path; hash replaces the deb's real digest when not empty.
func withDeb(t *testing.T, hash string) string {
	manifest := imagetest.Write(t)
	dir := filepath.Dir(manifest)
	pkg := debtest.Build(t, map[string]string{
		"/boot/vmlinuz-6.1.0-57-arm64":                                        "kernel from the deb\n",
		"/usr/lib/linux-image-6.1.0-57-arm64/broadcom/bcm2711-rpi-4-b.dtb":    "dtb from the deb\n",
		"/lib/modules/6.1.0-57-arm64/kernel/drivers/char/tpm/tpm_tis_core.ko": "module from the deb\n",
	})
	if err := os.MkdirAll(filepath.Join(dir, "debs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "debs", "kernel.deb"), pkg, 0o644); err != nil {
		t.Fatal(err)
	}
	if hash == "" {
		sum := sha256.Sum256(pkg)
		hash = hex.EncodeToString(sum[:])
	}
	text := strings.NewReplacer(
		`"boot/kernel8.img"`, `"deb:kernel:/boot/vmlinuz-6.1.0-57-arm64"`,
		`"boot/bcm2711-rpi-4-b.dtb"`, `"deb:kernel:/usr/lib/linux-image-6.1.0-57-arm64/broadcom/bcm2711-rpi-4-b.dtb"`,
		`"boot/tpm_tis_core.ko"`, `"deb:kernel:/lib/modules/6.1.0-57-arm64/kernel/drivers/char/tpm/tpm_tis_core.ko"`,
	).Replace(imagetest.Manifest) + "\n[[debs]]\nname = \"kernel\"\nfile = \"debs/kernel.deb\"\nsha256 = \"" + hash + "\"\n"
	if err := os.WriteFile(manifest, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return manifest
}

// Sources of the form deb:NAME:/path come out of the pinned deb.
func TestBuildTakesFilesFromDebs(t *testing.T) {
	manifest := withDeb(t, "")
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opt := Options{TargetSoC: "2711", InitramfsOut: filepath.Join(dir, "initramfs")}
	img := filepath.Join(dir, "custodian.img")
	if err := Build(m, img, opt); err != nil {
		t.Fatal(err)
	}
	if got := string(bootImgFile(t, img, "kernel8.img")); got != "kernel from the deb\n" {
		t.Errorf("kernel8.img is %q", got)
	}
	if got := string(bootImgFile(t, img, "bcm2711-rpi-4-b.dtb")); got != "dtb from the deb\n" {
		t.Errorf("the device tree is %q", got)
	}
	initramfs, _ := os.ReadFile(opt.InitramfsOut)
	var found bool
	for _, e := range readInitramfs(t, initramfs, m.SourceDateEpoch) {
		found = found || e.name == "modules/tpm_tis_core.ko" && e.data == "module from the deb\n"
	}
	if !found {
		t.Error("the initramfs lacks the module from the deb")
	}
}

// A deb whose digest is not the pinned one is refused, naming both.
func TestBuildRefusesWrongDebDigest(t *testing.T) {
	wrong := strings.Repeat("ab", 32)
	m, err := image.LoadManifest(withDeb(t, wrong))
	if err != nil {
		t.Fatal(err)
	}
	err = Build(m, filepath.Join(t.TempDir(), "x.img"), Options{})
	var d *DigestError
	if !errors.As(err, &d) || d.Want != wrong || len(d.Got) != 64 || d.Got == wrong || !strings.Contains(err.Error(), d.Got) || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("got %v, want a digest error naming both digests", err)
	}
}

// A boot.img without a kernel or the target's device tree, and sizes too
// small for what goes in, are refused with the manifest key to change.
func TestBuildRefusesUnbootableOrTooSmall(t *testing.T) {
	for _, c := range []struct {
		name, edit, soc, want string
	}{
		{"no kernel", `  { src = "boot/kernel8.img", dst = "kernel8.img" },` + "\n", "2711", "boot.img has no kernel8.img"},
		{"no Pi 5 device tree", "", "2712", "boot.img has no bcm2712-rpi-5-b.dtb"},
		{"no device tree", `  { src = "boot/bcm2711-rpi-4-b.dtb", dst = "bcm2711-rpi-4-b.dtb" },` + "\n", "", "boot.img has no bcm2711-rpi-4-b.dtb or bcm2712-rpi-5-b.dtb"},
		{"small image", "image_mib = 100\n", "", "image_mib = 100 is too small: the partition layout needs 180 MiB"},
		{"small root", "root_mib = 4\n", "", "root_mib = 4 is too small: the root filesystem needs 6 MiB"},
		{"small boot.img", "boot_img_mib = 8\n", "", "boot_img_mib = 8 is too small: what goes into it needs 11 MiB"},
		{"small boot partition", "boot_mib = 10\n", "", "boot_mib = 10 is too small: boot.img with boot.sig and config.txt needs 13 MiB"},
	} {
		manifest := imagetest.Write(t)
		text := imagetest.Manifest
		if strings.HasSuffix(c.edit, "MiB") || strings.Contains(c.edit, "_mib") {
			text = strings.Replace(text, "version = 1\n", "version = 1\n"+c.edit, 1)
		} else if c.edit != "" {
			text = strings.Replace(text, c.edit, "", 1)
		}
		if err := os.WriteFile(manifest, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		// Incompressible files larger than the sizes given.
		for name, f := range map[string]struct {
			path string
			size int
		}{"small root": {"rootfs/big", 5 << 20}, "small boot.img": {"boot/kernel8.img", 9 << 20}, "small boot partition": {"boot/kernel8.img", 9 << 20}} {
			if name == c.name {
				big := make([]byte, f.size)
				rand.Read(big)
				if err := os.WriteFile(filepath.Join(filepath.Dir(manifest), f.path), big, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		m, err := image.LoadManifest(manifest)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		err = Build(m, filepath.Join(t.TempDir(), "x.img"), Options{TargetSoC: c.soc})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

// readFATFile reads one file of a standalone FAT image.
func readFATFile(t *testing.T, file, name string) []byte {
	t.Helper()
	d, err := diskfs.Open(file, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fsys, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	data, err := imagefs.ReadFile(fsys, name, imagefs.MaxBootImg)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// cpioList lists an initramfs with GNU cpio (-t), names joined by spaces.
func cpioList(t *testing.T, initramfs []byte) string {
	t.Helper()
	requireTool(t, "cpio", "cpio")
	z, err := gzip.NewReader(bytes.NewReader(initramfs))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-it", "--quiet", "-H", "newc")
	cmd.Stdin = z
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// rootfs.files add files from debs and host files to the root; the
// policy predicted from the manifest (reading those sources) is the one
// the built image gives, and image.Manifest.Predict, which cannot read
// them, refuses. A file that would replace one of rootfs.dir is refused.
func TestRootFilesFromSources(t *testing.T) {
	manifest := withDeb(t, "")
	text, _ := os.ReadFile(manifest)
	add := func(files string) {
		t.Helper()
		s := strings.Replace(string(text), "dir = \"rootfs\"\n", "dir = \"rootfs\"\nfiles = ["+files+"]\n", 1)
		if err := os.WriteFile(manifest, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	add(`{ src = "deb:kernel:/usr/lib/linux-image-6.1.0-57-arm64/broadcom/bcm2711-rpi-4-b.dtb", dst = "usr/lib/custodian/board.dtb" },
  { src = "boot/tpm_tis.ko", dst = "usr/bin/tool", executable = true }`)
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Predict(); !errors.Is(err, image.ErrRootFiles) {
		t.Fatalf("Predict: %v, want a refusal", err)
	}
	img := filepath.Join(t.TempDir(), "custodian.img")
	if err := Build(m, img, Options{}); err != nil {
		t.Fatal(err)
	}
	a := imagePredictsManifest(t, img, m, "")
	plain, err := PredictManifest(mustLoad(t, imagetest.Write(t)), "")
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := plain.Marshal(); bytes.Equal(p, a) {
		t.Fatal("the added files changed nothing in the prediction")
	}
	requireTool(t, "unsquashfs", "squashfs-tools")
	root := filepath.Join(t.TempDir(), "root.squashfs")
	part := partitions(t, img)[layout.SlotA.RootPartition()-1]
	run(t, "dd", "if="+img, "of="+root, "bs=512", "skip="+strconv.FormatInt(part.start, 10), "count="+strconv.FormatInt(part.size, 10), "status=none")
	out := strings.Join(strings.Fields(run(t, "unsquashfs", "-lln", root)), " ")
	for _, want := range []string{"-rw-r--r-- 0/0 17 2026-01-01 00:00 squashfs-root/usr/lib/custodian/board.dtb", "-rwxr-xr-x 0/0 20 2026-01-01 00:00 squashfs-root/usr/bin/tool"} {
		if !strings.Contains(out, want) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", want, out)
		}
	}

	add(`{ src = "boot/tpm_tis.ko", dst = "etc/hostname" }`)
	if err := Build(mustLoad(t, manifest), filepath.Join(t.TempDir(), "x.img"), Options{}); err == nil || !strings.Contains(err.Error(), "etc/hostname is already in rootfs.dir") {
		t.Fatalf("a file replacing one of rootfs.dir: %v", err)
	}
}

func mustLoad(t *testing.T, manifest string) *image.Manifest {
	t.Helper()
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A rootfs.files destination below a symlink of rootfs.dir that leads out
// of it (opt -> /some/dir) is refused by image build and image measure
// --manifest, and nothing is written on the build host through the link.
func TestRootFileBelowSymlinkStaysInTheTree(t *testing.T) {
	manifest := imagetest.Write(t)
	dir := filepath.Dir(manifest)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "rootfs", "opt")); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(text), "dir = \"rootfs\"\n", "dir = \"rootfs\"\nfiles = [{ src = \"boot/tpm_tis.ko\", dst = \"opt/planted\" }]\n", 1)
	if err := os.WriteFile(manifest, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	_, predictErr := PredictManifest(m, "")
	buildErr := Build(m, filepath.Join(t.TempDir(), "custodian.img"), Options{})
	if _, err := os.Lstat(filepath.Join(outside, "planted")); err == nil {
		t.Errorf("%s was written on the build host, outside the image", filepath.Join(outside, "planted"))
	}
	for what, err := range map[string]error{"image measure --manifest": predictErr, "image build": buildErr} {
		if err == nil || !strings.Contains(err.Error(), "rootfs file opt/planted") {
			t.Errorf("%s: %v, want a refusal naming the rootfs file", what, err)
		}
	}
}

// measure.binary is /init and is measured on the device as a regular
// file: the build refuses a symlink there (read through, it would put a
// build-host file into /init) with the message image measure gives.
func TestBuildRefusesSymlinkedBinary(t *testing.T) {
	manifest := imagetest.Write(t)
	host := filepath.Join(t.TempDir(), "custodian-on-the-host")
	if err := os.WriteFile(host, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(manifest), "rootfs/usr/bin/custodian")
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, bin); err != nil {
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	_, predictErr := PredictManifest(m, "")
	buildErr := Build(m, filepath.Join(t.TempDir(), "custodian.img"), Options{})
	const want = "measuring /usr/bin/custodian: not a regular file"
	for what, err := range map[string]error{"image measure --manifest": predictErr, "image build": buildErr} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", what, err, want)
		}
	}
}

// A root file whose name is not valid UTF-8 cannot be measured (io/fs
// paths are UTF-8): image build and image measure --manifest refuse it,
// naming the file escaped.
func TestBuildRefusesNonUTF8Name(t *testing.T) {
	manifest := imagetest.Write(t)
	if err := os.WriteFile(filepath.Join(filepath.Dir(manifest), "rootfs/etc/bad\xffname"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	_, predictErr := PredictManifest(m, "")
	buildErr := Build(m, filepath.Join(t.TempDir(), "custodian.img"), Options{})
	const want = `"etc/bad\xffname" is not valid UTF-8`
	for what, err := range map[string]error{"image measure --manifest": predictErr, "image build": buildErr} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", what, err, want)
		}
	}
}
