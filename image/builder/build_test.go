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
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/firmware/update"
	"github.com/custodian-project/custodian/image/bootsig"
	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/image/layout"

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
	// 1 + autoboot 8 + boot 2×24 + root 2×16 + data 90 + 1 (backup GPT);
	// data: 64 + 2 × the update file's 13 (1 + boot.img 8 + 2 + root 1 + 1)
	if len(a) != 180<<20 {
		t.Errorf("image is %d bytes, want 180 MiB", len(a))
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
	fsys, err := d.GetFilesystem(layout.SlotA.BootPartition())
	if err != nil {
		t.Fatal(err)
	}
	if bootImg, err = imagefs.ReadFile(fsys, BootImgName, imagefs.MaxBootImg); err != nil {
		t.Fatal(err)
	}
	if sig, err = imagefs.ReadFile(fsys, BootSigName, 4096); err != nil {
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

// Standard tools read what the builder wrote: the GPT (fdisk, sgdisk -v), the three
// FAT file systems and boot.img (fsck.vfat, mtools), the squashfs root
// (unsquashfs) and the ext4 data partition (e2fsck), with the files,
// modes and times we expect.
func TestImageReadableByStandardTools(t *testing.T) {
	for _, tool := range [][2]string{{"fdisk", "fdisk"}, {"fsck.vfat", "dosfstools"}, {"mdir", "mtools"}, {"unsquashfs", "squashfs-tools"}, {"e2fsck", "e2fsprogs"}, {"sgdisk", "gdisk"}} {
		requireTool(t, tool[0], tool[1])
	}
	img := build(t, imagetest.Write(t), nil)
	if out := run(t, "sgdisk", "-v", img); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	out := run(t, "fdisk", "-l", "-o", "Device,Start,Size,Type,Name", img)
	for _, want := range []string{"Disklabel type: gpt", "Disk identifier: 43555354-4F44-4941-4E00-000000000000",
		img + "1  2048 8M Microsoft basic data custodian-autoboot",
		img + "2 18432 24M Microsoft basic data custodian-boot-a",
		img + "3 67584 24M Microsoft basic data custodian-boot-b",
		img + "4 116736 16M Linux filesystem custodian-root-a",
		img + "5 149504 16M Linux filesystem custodian-root-b",
		img + "6 182272 90M Linux filesystem custodian-data"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("fdisk -l lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	parts := map[int]string{}
	for _, p := range partitions(t, img) {
		parts[p.n] = filepath.Join(dir, strconv.Itoa(p.n)+".part")
		run(t, "dd", "if="+img, "of="+parts[p.n], "bs=512", "skip="+strconv.FormatInt(p.start, 10), "count="+strconv.FormatInt(p.size, 10), "status=none")
	}
	for _, n := range []int{1, 2, 3} {
		run(t, "fsck.vfat", "-n", parts[n])
	}
	if out := run(t, "mdir", "-b", "-i", parts[1], "::"); strings.TrimSpace(out) != "::/autoboot.txt" {
		t.Errorf("autoboot partition holds %q, want autoboot.txt alone", out)
	}
	if out := run(t, "mtype", "-i", parts[1], "::autoboot.txt"); out != string(layout.Autoboot(layout.SlotA)) {
		t.Errorf("autoboot.txt is %q", out)
	}
	out = run(t, "mdir", "-b", "-i", parts[2], "::")
	if got := strings.Fields(out); strings.Join(got, " ") != "::/boot.img ::/boot.sig ::/config.txt" {
		t.Errorf("boot partition A holds %v", got)
	}
	if out := run(t, "mdir", "-b", "-i", parts[3], "::"); strings.TrimSpace(out) != "" {
		t.Errorf("boot partition B is not empty: %q", out)
	}
	bootImg, _ := readBootPartition(t, img)
	inner := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(inner, bootImg, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "fsck.vfat", "-n", inner)
	out = run(t, "mdir", "-i", inner, "-/", "::")
	for _, want := range []string{" kernel8.img", " initramfs.img", " cmdline.txt", " custodian.toml", " tpm-slb9670.dtbo"} {
		if !strings.Contains(out, want) {
			t.Errorf("mdir of boot.img lacks %q:\n%s", want, out)
		}
	}
	out = strings.Join(strings.Fields(run(t, "unsquashfs", "-lln", parts[4])), " ")
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
	if out := run(t, "unsquashfs", "-s", parts[4]); !strings.Contains(out, "Compression gzip") {
		t.Errorf("the root is not gzip-compressed:\n%s", out)
	}
	checkRootPinWithTools(t, inner, parts[4])
	if rootB, err := os.ReadFile(parts[5]); err != nil || len(rootB) != 16<<20 || bytes.Count(rootB, []byte{0}) != len(rootB) {
		t.Errorf("root partition B is not 16 MiB of zeros (%d bytes, %v)", len(rootB), err)
	}
	out = run(t, "e2fsck", "-fn", parts[6])
	if !strings.Contains(out, "custodian-data: 11/") {
		t.Errorf("e2fsck of the data partition:\n%s", out)
	}
}

type partInfo struct {
	n           int
	start, size int64
}

// partitions reads the GPT back with go-diskfs.
func partitions(t *testing.T, img string) []partInfo {
	t.Helper()
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	var out []partInfo
	for i, p := range table.GetPartitions() {
		out = append(out, partInfo{i + 1, p.GetStart() / 512, p.GetSize() / 512})
	}
	if len(out) != layout.PartitionCount {
		t.Fatalf("%d partitions, want %d", len(out), layout.PartitionCount)
	}
	return out
}

// The policy predicted from the built image (its boot.img manifest and its
// squashfs, as go-diskfs reads them back) equals the one predicted from
// the inputs: the builder puts into the image exactly what the prediction
// assumes.
func TestPredictImageMatchesManifest(t *testing.T) {
	manifest := imagetest.Write(t)
	imagePredictsManifest(t, build(t, manifest, nil), mustLoad(t, manifest), "")
}

// imagePredictsManifest requires the policy predicted from the built
// image to equal the manifest's (rootfs.files read from debDir), and
// returns it.
func imagePredictsManifest(t *testing.T, img string, m *image.Manifest, debDir string) []byte {
	t.Helper()
	want, err := PredictManifest(m, debDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := PredictImage(img)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := want.Marshal()
	b, _ := got.Marshal()
	if !bytes.Equal(a, b) {
		t.Fatalf("prediction from the image differs from the manifest's:\n%s\n%s", b, a)
	}
	return a
}

// docs/operator.md step 12: the operator puts the update file on the
// device, into transfer/ on the data partition beside the ledger, and
// update apply reads it there. The update file holds slot A's boot and
// root partitions alone, so it is far smaller than the image, and the
// default data partition holds it twice with the ledger's reserve.
func TestUpdateFileFitsTheDataPartition(t *testing.T) {
	m := mustLoad(t, imagetest.Write(t))
	dir := t.TempDir()
	img, upd := filepath.Join(dir, "custodian.img"), filepath.Join(dir, "custodian.update")
	if err := Build(m, img, Options{TargetSoC: "2711", UpdateOut: upd}); err != nil {
		t.Fatal(err)
	}
	imgInfo, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(upd)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := update.ReadUpdate(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	data := partitions(t, img)[layout.DataPartition-1].size * 512
	// Room for an uncompressed one, with the ledger's reserve.
	if int64(len(raw))+dataReserveMiB*mib > data {
		t.Errorf("the update file is %d MiB; the data partition it is put on is %d MiB, and keeps %d MiB for the ledger", len(raw)>>20, data>>20, dataReserveMiB)
	}
	if int64(len(file)) >= imgInfo.Size()/4 {
		t.Errorf("the update file is %d MiB, the whole image %d MiB", len(file)>>20, imgInfo.Size()>>20)
	}
	tab, err := update.ReadTable(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 2 || tab.Partitions[layout.SlotA.BootPartition()].Size == 0 || tab.Partitions[layout.SlotA.RootPartition()].Size == 0 {
		t.Errorf("the update file's partitions: %+v, want slot A's boot and root alone", tab.Partitions)
	}
	t.Logf("image %d MiB, update file %d KiB (%d MiB uncompressed), data partition %d MiB", imgInfo.Size()>>20, len(file)>>10, len(raw)>>20, data>>20)
}

// The same inputs built under a strict umask (077, common for root on
// hardened build hosts) and the usual one (022) give the same image.
func TestBuildReproducibleAcrossUmask(t *testing.T) {
	manifest := imagetest.Write(t)
	m := mustLoad(t, manifest)
	var imgs [2][]byte
	for i, mask := range []int{0o022, 0o077} {
		old := unix.Umask(mask)
		out := filepath.Join(t.TempDir(), "custodian.img")
		err := Build(m, out, Options{})
		unix.Umask(old)
		if err != nil {
			t.Fatalf("umask %03o: %v", mask, err)
		}
		imgs[i], _ = os.ReadFile(out)
	}
	if !bytes.Equal(imgs[0], imgs[1]) {
		t.Error("the image built under umask 077 differs from the one under 022")
	}
}

// checkRootPinWithTools reads the root pin out of boot.img's initramfs
// with mtools, gzip and GNU cpio, and checks it with head, sha256sum and
// unsquashfs: the pinned prefix of the root partition is a whole squashfs
// whose SHA-256 is the pinned one.
func checkRootPinWithTools(t *testing.T, bootImg, rootPart string) {
	t.Helper()
	requireTool(t, "cpio", "cpio")
	line := run(t, "sh", "-c", `mtype -i "$1" ::initramfs.img | gzip -dc | cpio -i --quiet --to-stdout root.sha256`, "sh", bootImg)
	f := strings.Fields(line)
	if len(f) != 2 {
		t.Fatalf("root.sha256 is %q", line)
	}
	prefix := filepath.Join(t.TempDir(), "root.squashfs")
	run(t, "sh", "-c", `head -c "$1" "$2" > "$3"`, "sh", f[1], rootPart, prefix)
	if sum := strings.Fields(run(t, "sha256sum", prefix))[0]; sum != f[0] {
		t.Errorf("sha256sum of the pinned %s bytes is %s, the pin says %s", f[1], sum, f[0])
	}
	if out := run(t, "unsquashfs", "-lln", prefix); !strings.Contains(out, "squashfs-root/usr/bin/custodian") {
		t.Errorf("the pinned prefix is not the whole root:\n%s", out)
	}
}
