package builder

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/custodian-project/custodian/image/bootsig"
	"github.com/custodian-project/custodian/image/imagetest"

	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/tests/need"
)

func build(t *testing.T, manifest string, key *rsa.PrivateKey) string {
	t.Helper()
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "custodian.img")
	opt := Options{TargetSoC: "2711"}
	if key != nil {
		opt.Key = key
	}
	// A private TMPDIR shows whether the build cleans up after itself.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	start := time.Now()
	if err := Build(m, out, opt); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v", out, time.Since(start))
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the build left temporary files: %v", left)
	}
	return out
}

// Two builds of the same inputs, in different directories and at
// different times, give the same bytes.
func TestBuildReproducible(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(build(t, imagetest.Write(t), key))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a leaked clock read would show
	b, err := os.ReadFile(build(t, imagetest.Write(t), key))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 64<<20 {
		t.Errorf("image is %d bytes, want 64 MiB", len(a))
	}
	if !bytes.Equal(a, b) {
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("builds differ, first at byte %d (0x%x)", i, i)
			}
		}
	}
}

// The boot partition holds boot.img and a boot.sig that verifies it.
func TestBootSigVerifies(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	img := build(t, imagetest.Write(t), key)
	bootImg, sigData := readBootPartition(t, img)
	sig, err := bootsig.Parse(sigData)
	if err != nil {
		t.Fatal(err)
	}
	if err := sig.Verify(bootImg, &key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if sig.Timestamp != 1767225600 || sig.TargetSoC != "2711" {
		t.Errorf("boot.sig: ts %d, soc %q", sig.Timestamp, sig.TargetSoC)
	}
}

func readBootPartition(t *testing.T, img string) (bootImg, sig []byte) {
	t.Helper()
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fsys, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	if bootImg, err = readFAT(fsys, BootImgName); err != nil {
		t.Fatal(err)
	}
	if sig, err = readFAT(fsys, BootSigName); err != nil {
		t.Fatal(err)
	}
	return bootImg, sig
}

func requireTool(t *testing.T, tool, pkg string) {
	t.Helper()
	need.Command(t, tool, pkg)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Standard tools read what the builder wrote: the partition table, both
// FAT file systems (checked by fsck.vfat, listed by mtools) and the
// squashfs root (unsquashfs), with the files, modes and times we expect.
func TestImageReadableByStandardTools(t *testing.T) {
	for _, tool := range [][2]string{{"fdisk", "fdisk"}, {"fsck.vfat", "dosfstools"}, {"mdir", "mtools"}, {"unsquashfs", "squashfs-tools"}} {
		requireTool(t, tool[0], tool[1])
	}
	img := build(t, imagetest.Write(t), nil)
	out := run(t, "fdisk", "-l", img)
	for _, want := range []string{"Disk identifier: 0x43555354", img + "1 *", "W95 FAT16 (LBA)", img + "2", "Linux"} {
		if !strings.Contains(out, want) {
			t.Errorf("fdisk -l lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot.part")
	run(t, "dd", "if="+img, "of="+boot, "bs=1M", "skip=1", "count=24", "status=none")
	run(t, "fsck.vfat", "-n", boot)
	out = run(t, "mdir", "-i", boot, "::")
	for _, want := range []string{" boot.img", " boot.sig", " config.txt"} {
		if !strings.Contains(out, want) {
			t.Errorf("mdir lacks %q:\n%s", want, out)
		}
	}
	bootImg, _ := readBootPartition(t, img)
	inner := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(inner, bootImg, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "fsck.vfat", "-n", inner)
	out = run(t, "mdir", "-i", inner, "-/", "::")
	for _, want := range []string{" kernel8.img", " cmdline.txt", " custodian.toml", " tpm-slb9670.dtbo"} {
		if !strings.Contains(out, want) {
			t.Errorf("mdir of boot.img lacks %q:\n%s", want, out)
		}
	}
	out = strings.Join(strings.Fields(run(t, "unsquashfs", "-o", strconv.Itoa(rootOffset), "-lln", img)), " ")
	for _, want := range []string{
		"-rwxr-xr-x 0/0 25 2026-01-01 00:00 squashfs-root/usr/bin/custodian ",
		"lrwxrwxrwx 0/0 9 2026-01-01 00:00 squashfs-root/usr/bin/custodiand -> custodian",
		"-rw-r--r-- 0/0 17 2026-01-01 00:00 squashfs-root/etc/custodian/config.toml ",
		"drwxr-xr-x 0/0 53 2026-01-01 00:00 squashfs-root/etc/custodian/trust ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", want, out)
		}
	}
}

// rootOffset is where the test image's root partition starts.
const rootOffset = (bootStart + 24*mib/sector) * sector

// The policy predicted from the built image (its boot.img manifest and its
// squashfs, as go-diskfs reads them back) equals the one predicted from
// the inputs: the builder puts into the image exactly what the prediction
// assumes.
func TestPredictImageMatchesManifest(t *testing.T) {
	manifest := imagetest.Write(t)
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Predict()
	if err != nil {
		t.Fatal(err)
	}
	got, err := PredictImage(build(t, manifest, nil))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := want.Marshal()
	b, _ := got.Marshal()
	if !bytes.Equal(a, b) {
		t.Fatalf("prediction from the image differs from the manifest's:\n%s\n%s", b, a)
	}
}
