package update

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/builder"
	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/tests/need"
)

const mib = 1 << 20

// built is a real image from the builder, the image update apply takes:
// its bytes, its slot A's boot and root partitions' bytes and sizes, and
// the policy its manifest predicts (image measure --manifest, read from
// the inputs, not from the image: the reference the update's reading of
// the image must agree with).
type built struct {
	img        []byte
	updateFile []byte // the update file (image build --update-out)
	update     []byte // and the image it decompresses to
	boot, root []byte
	policy     *bootpolicy.Policy
}

var (
	builtOnce sync.Once
	builtImg  built
	builtErr  error
)

// smallSizes are the smallest partitions the builder allows (46 MiB in
// all), so that every test disk stays small.
const smallSizes = "boot_img_mib = 8\nboot_mib = 10\nroot_mib = 4\ndata_mib = 8\n"

// buildImage builds the test manifest once per test binary.
func buildImage(t *testing.T) built {
	t.Helper()
	builtOnce.Do(func() { builtImg, builtErr = buildImageOnce(t) })
	if builtErr != nil {
		t.Fatal(builtErr)
	}
	return builtImg
}

func buildImageOnce(t *testing.T) (built, error) {
	manifest := imagetest.Write(t)
	raw, err := os.ReadFile(manifest)
	if err != nil {
		return built{}, err
	}
	small := strings.Replace(string(raw), "security_version = 1\n", "security_version = 1\n"+smallSizes, 1)
	if err := os.WriteFile(manifest, []byte(small), 0o644); err != nil {
		return built{}, err
	}
	m, err := image.LoadManifest(manifest)
	if err != nil {
		return built{}, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return built{}, err
	}
	out, updateOut := filepath.Join(t.TempDir(), "built.img"), filepath.Join(t.TempDir(), "built.update")
	if err := builder.Build(m, out, builder.Options{Key: key, TargetSoC: "2711", UpdateOut: updateOut}); err != nil {
		return built{}, err
	}
	b := built{}
	if b.updateFile, err = os.ReadFile(updateOut); err != nil {
		return built{}, err
	}
	if b.update, err = ReadUpdate(bytes.NewReader(b.updateFile)); err != nil {
		return built{}, err
	}
	if b.policy, err = m.Predict(); err != nil {
		return built{}, err
	}
	if b.img, err = os.ReadFile(out); err != nil {
		return built{}, err
	}
	tab, err := ReadTable(bytesAt(b.img), int64(len(b.img)))
	if err != nil {
		return built{}, err
	}
	boot, root := tab.Partitions[layout.SlotA.BootPartition()], tab.Partitions[layout.SlotA.RootPartition()]
	b.boot = b.img[boot.Start : boot.Start+boot.Size]
	b.root = b.img[root.Start : root.Start+root.Size]
	return b, nil
}

// mib is the size of a partition of the built image in MiB.
func (b built) mib(part []byte) int64 { return int64(len(part)) / mib }

// imageFile writes the built image to a new file, for the tools that
// change it.
func (b built) imageFile(t *testing.T) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "custodian.img")
	if err := os.WriteFile(file, b.img, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// disk writes a device, a GPT disk of the appliance layout, to a new
// file: sizes gives each partition's size in MiB, and content fills
// partitions, padded with zeros (anything else gets random bytes, so a
// stray write shows).
func disk(t *testing.T, sizes map[int]int64, content map[int][]byte) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "disk.img")
	total := int64(2 * mib)
	for _, s := range sizes {
		total += s * mib
	}
	d, err := diskfs.Create(file, total, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: SectorSize, PhysicalSectorSize: SectorSize, ProtectiveMBR: true}
	start := uint64(mib / SectorSize)
	for n := 1; n <= layout.PartitionCount; n++ {
		s, ok := sizes[n]
		if !ok {
			continue
		}
		end := start + uint64(s*mib/SectorSize) - 1
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: n, Start: start, End: end, Type: gpt.LinuxFilesystem, Name: layout.PartitionName(n)})
		start = end + 1
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	for _, p := range table.Partitions {
		data := make([]byte, (p.End-p.Start+1)*SectorSize)
		if c, ok := content[p.Index]; ok {
			copy(data, c)
		} else {
			rand.Read(data)
		}
		if _, err := d.WritePartitionContents(p.Index, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	return file
}

// autobootFAT makes a FAT file system with autoboot.txt for slot A, with
// dosfstools and mtools, not the library under test.
func autobootFAT(t *testing.T) []byte {
	t.Helper()
	need.Command(t, "mkfs.vfat", "dosfstools")
	need.Command(t, "mcopy", "mtools")
	dir := t.TempDir()
	fat, txt := filepath.Join(dir, "autoboot.fat"), filepath.Join(dir, AutobootName)
	if err := os.WriteFile(txt, layout.Autoboot(layout.SlotA), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.vfat", "-C", fat, "1024")
	run(t, "mcopy", "-i", fat, txt, "::"+AutobootName)
	data, err := os.ReadFile(fat)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// deviceSizes is a device's layout in MiB: slots as large as the built
// image's partitions, autoboot and data partitions of 1 MiB.
func deviceSizes(b built) map[int]int64 {
	boot, root := b.mib(b.boot), b.mib(b.root)
	return map[int]int64{1: 1, 2: boot, 3: boot, 4: root, 5: root, 6: 1}
}

// commitSizes is a device's layout for Commit, which reads and writes
// only the autoboot partition.
var commitSizes = map[int]int64{1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1}

// newDevice makes a device of the given layout, with autoboot.txt for
// slot A.
func newDevice(t *testing.T, sizes map[int]int64) string {
	return disk(t, sizes, map[int][]byte{1: autobootFAT(t)})
}

func open(t *testing.T, file string) (*os.File, int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return f, info.Size()
}

func openImage(data []byte) (*Image, error) {
	return OpenImage(bytesAt(data), int64(len(data)))
}

// partitionHashes is the SHA-256 of every partition of a disk.
func partitionHashes(t *testing.T, file string) map[int][sha256.Size]byte {
	t.Helper()
	f, size := open(t, file)
	tab, err := ReadTable(f, size)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][sha256.Size]byte{}
	for n, p := range tab.Partitions {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(f, p.Start, p.Size)); err != nil {
			t.Fatal(err)
		}
		out[n] = [sha256.Size]byte(h.Sum(nil))
	}
	return out
}

func approveAll(*bootpolicy.Policy) error { return nil }

// Apply writes the image's slot A into the slot that is not running,
// byte for byte, and leaves the running slot, the autoboot and the data
// partitions as they were; the policy it asks approval for is the one
// the image's manifest predicts from its inputs.
func TestApplyWritesTheInactiveSlotOnly(t *testing.T) {
	b := buildImage(t)
	for _, running := range []layout.Slot{layout.SlotA, layout.SlotB} {
		t.Run("from slot "+running.String(), func(t *testing.T) {
			im, err := openImage(b.img)
			if err != nil {
				t.Fatal(err)
			}
			devFile := newDevice(t, deviceSizes(b))
			before := partitionHashes(t, devFile)
			dev, size := open(t, devFile)
			var approved *bootpolicy.Policy
			w, err := Apply(dev, size, Boot{Slot: running, Pi: true}, im, func(p *bootpolicy.Policy) error { approved = p; return nil })
			if err != nil {
				t.Fatal(err)
			}
			target := running.Other()
			if w.Slot != target {
				t.Fatalf("wrote slot %s, want %s", w.Slot, target)
			}
			if approved == nil || !approved.PCRs.Equal(b.policy.PCRs) || approved.SecurityVersion != b.policy.SecurityVersion {
				t.Fatalf("the policy asked for approval is not the image's (image measure --manifest):\n%v\n%v", approved, b.policy)
			}
			after := partitionHashes(t, devFile)
			for n := 1; n <= layout.PartitionCount; n++ {
				written := n == target.BootPartition() || n == target.RootPartition()
				if (before[n] != after[n]) != written {
					t.Errorf("partition %d (%s): changed %v, want %v", n, layout.PartitionName(n), before[n] != after[n], written)
				}
			}
			tab, err := ReadTable(dev, size)
			if err != nil {
				t.Fatal(err)
			}
			for n, want := range map[int][]byte{target.BootPartition(): b.boot, target.RootPartition(): b.root} {
				got := make([]byte, len(want))
				if _, err := dev.ReadAt(got, tab.Partitions[n].Start); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("partition %d does not hold the image's slot A content", n)
				}
			}
			if w.Boot != sha256.Sum256(b.boot) || w.Root != sha256.Sum256(b.root) {
				t.Error("the reported digests are not those of the image's partitions")
			}
		})
	}
}

// Every refusal leaves the whole device as it was.
func TestApplyRefusals(t *testing.T) {
	b := buildImage(t)
	smallSlots := deviceSizes(b)
	smallSlots[2], smallSlots[3] = b.mib(b.boot)-1, b.mib(b.boot)-1
	cases := []struct {
		name    string
		image   []byte
		device  map[int]int64
		boot    Boot
		approve Approver
		want    string
	}{
		{"image too big", b.img, smallSlots, Boot{Slot: layout.SlotA}, approveAll, "does not fit"},
		{"wrong GPT names", renamed(t, b, layout.SlotA.RootPartition(), "rootfs"), nil, Boot{Slot: layout.SlotA}, approveAll, `named "rootfs"`},
		{"missing boot.sig", withoutBootSig(t, b), nil, Boot{Slot: layout.SlotA}, approveAll, "no boot.sig"},
		{"not approved", b.img, nil, Boot{Slot: layout.SlotA},
			func(*bootpolicy.Policy) error { return errors.New("not resealed") }, "not resealed"},
		{"tryboot", b.img, nil, Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, approveAll, "tryboot"},
		{"root not the pinned one", rootPaddingChanged(t, b), nil, Boot{Slot: layout.SlotA}, approveAll, "boot.img's pin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.device == nil {
				c.device = deviceSizes(b)
			}
			devFile := newDevice(t, c.device)
			before := fileHash(t, devFile)
			dev, size := open(t, devFile)
			im, err := openImage(c.image)
			if err == nil {
				_, err = Apply(dev, size, c.boot, im, c.approve)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if fileHash(t, devFile) != before {
				t.Fatal("a refused update changed the device")
			}
		})
	}
}

// rootPaddingChanged is the built image with one byte changed in root
// A's padding: after the squashfs's bytes_used, before the pinned size.
// The root's files and so its predicted policy stay the same; only the
// pin tells this root from the built one.
func rootPaddingChanged(t *testing.T, b built) []byte {
	t.Helper()
	used := int64(binary.LittleEndian.Uint64(b.root[40:48]))
	if used%4096 == 0 {
		t.Fatal("the test root's squashfs ends on a 4 KiB boundary: no padding to change")
	}
	img := bytes.Clone(b.img)
	tab, err := ReadTable(bytesAt(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	img[tab.Partitions[layout.SlotA.RootPartition()].Start+used] ^= 0xff
	return img
}

// TestInvariantApplyChecksTheSlotAsWritten: update apply on an image file
// (not a gzip update file, which is read into memory once) reads root A
// twice: once to check it (the pin and the prediction), once to copy it.
// A file that changes in between (another writer, a removable medium that
// answers differently) must not leave a slot that Apply calls written:
// the slot is read back as the device boots it. The approve callback
// stands for the time between the check and the copy.
func TestInvariantApplyChecksTheSlotAsWritten(t *testing.T) {
	b := buildImage(t)
	f, size := open(t, b.imageFile(t))
	im, err := OpenImage(f, size)
	if err != nil {
		t.Fatal(err)
	}
	devFile := newDevice(t, deviceSizes(b))
	dev, devSize := open(t, devFile)
	_, err = Apply(dev, devSize, Boot{Slot: layout.SlotA, Pi: true}, im, func(*bootpolicy.Policy) error {
		// The pin was checked; the file changes before the copy.
		one := make([]byte, 1)
		if _, err := f.ReadAt(one, im.Root.Start+4096); err != nil {
			return err
		}
		one[0] ^= 0xff
		_, err := f.WriteAt(one, im.Root.Start+4096)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "as written is not the image that was checked") {
		t.Fatalf("Apply with the image changed between check and copy: %v", err)
	}
}

// renamed is the built image with partition n named name in its GPT (by
// sgdisk).
func renamed(t *testing.T, b built, n int, name string) []byte {
	need.Command(t, "sgdisk", "gdisk")
	file := b.imageFile(t)
	run(t, "sgdisk", "-c", fmt.Sprintf("%d:%s", n, name), file)
	return readAll(t, file)
}

// withoutBootSig is the built image with boot.sig removed from slot A's
// boot partition (by mtools).
func withoutBootSig(t *testing.T, b built) []byte {
	need.Command(t, "mdel", "mtools")
	file := b.imageFile(t)
	tab, err := ReadTable(bytesAt(b.img), int64(len(b.img)))
	if err != nil {
		t.Fatal(err)
	}
	at := fmt.Sprintf("%s@@%d", file, tab.Partitions[layout.SlotA.BootPartition()].Start)
	run(t, "mdel", "-i", at, "::"+BootSigName)
	return readAll(t, file)
}

func readAll(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func fileHash(t *testing.T, file string) [sha256.Size]byte {
	t.Helper()
	return sha256.Sum256(readAll(t, file))
}

// Commit in the tryboot of slot B rewrites autoboot.txt for B, and the
// FAT stays clean for fsck.vfat; nothing else on the disk changes.
func TestCommitRewritesAutoboot(t *testing.T) {
	need.Command(t, "fsck.vfat", "dosfstools")
	devFile := newDevice(t, commitSizes)
	before := partitionHashes(t, devFile)
	dev, size := open(t, devFile)
	if err := Commit(dev, size, Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, nil); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAutoboot(dev, size)
	if err != nil || !bytes.Equal(got, layout.Autoboot(layout.SlotB)) {
		t.Fatalf("autoboot.txt after commit: %q, %v", got, err)
	}
	after := partitionHashes(t, devFile)
	for n := 2; n <= layout.PartitionCount; n++ {
		if before[n] != after[n] {
			t.Errorf("partition %d changed", n)
		}
	}
	fat := extract(t, dev, size, layout.AutobootPartition)
	run(t, "fsck.vfat", "-n", fat)
	if typed := run(t, "mtype", "-i", fat, "::"+AutobootName); typed != string(layout.Autoboot(layout.SlotB)) {
		t.Fatalf("mtools reads autoboot.txt as %q", typed)
	}
	// Committing again in the same boot is harmless.
	if err := Commit(dev, size, Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCommitRefusals(t *testing.T) {
	cases := []struct {
		name    string
		boot    Boot
		pending []string
		want    string
	}{
		{"not in tryboot", Boot{Slot: layout.SlotB, Pi: true}, nil, "not a tryboot"},
		{"reseal not finished", Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, []string{"bundles/2026-11.json.next"}, "reseal --finish has not completed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			devFile := newDevice(t, commitSizes)
			before := fileHash(t, devFile)
			dev, size := open(t, devFile)
			err := Commit(dev, size, c.boot, c.pending)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if fileHash(t, devFile) != before {
				t.Fatal("a refused commit changed the device")
			}
		})
	}
}

// extract copies partition n of a disk to a file of its own.
func extract(t *testing.T, dev io.ReaderAt, size int64, n int) string {
	t.Helper()
	tab, err := ReadTable(dev, size)
	if err != nil {
		t.Fatal(err)
	}
	p := tab.Partitions[n]
	data := make([]byte, p.Size)
	if _, err := dev.ReadAt(data, p.Start); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "part.img")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// An image built without --key has a boot.sig with no signature, which a
// board with secure boot never boots: the tryboot would fall back without
// a word. OpenImage refuses it, naming the missing signature.
func TestApplyRefusesUnsignedBootSig(t *testing.T) {
	manifest := imagetest.Write(t)
	small := strings.Replace(string(readAll(t, manifest)), "security_version = 1\n", "security_version = 1\n"+smallSizes, 1)
	if err := os.WriteFile(manifest, []byte(small), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "unsigned.img")
	if err := builder.Build(m, out, builder.Options{TargetSoC: "2711"}); err != nil {
		t.Fatal(err)
	}
	if _, err := openImage(readAll(t, out)); err == nil || !strings.Contains(err.Error(), "no signature") {
		t.Fatalf("opening an image with an unsigned boot.sig: %v, want a refusal naming the missing signature", err)
	}
}

// update apply takes the update file (slot A's boot and root partitions
// alone, each smaller than the device's): the slot it writes holds the
// image's boot.img and a root that predicts the image's policy.
func TestApplyTakesTheUpdateFile(t *testing.T) {
	b := buildImage(t)
	if len(b.updateFile) >= len(b.img)/4 {
		t.Fatalf("the update file (%d bytes) is not much smaller than the image (%d)", len(b.updateFile), len(b.img))
	}
	im, err := openImage(b.update)
	if err != nil {
		t.Fatal(err)
	}
	full, err := openImage(b.img)
	if err != nil {
		t.Fatal(err)
	}
	devFile := newDevice(t, deviceSizes(b))
	dev, size := open(t, devFile)
	if _, err := Apply(dev, size, Boot{Slot: layout.SlotB, Pi: true}, im, approveAll); err != nil {
		t.Fatal(err)
	}
	written, err := OpenImage(dev, size) // slot A, the one just written
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(written.bootImg, full.bootImg) {
		t.Error("the written slot's boot.img is not the image's")
	}
	p, err := written.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if !p.PCRs.Equal(b.policy.PCRs) {
		t.Errorf("the written slot predicts another policy than the image:\n%v\n%v", p, b.policy)
	}
}

// ReadUpdate takes one gzip stream of at most MaxUpdate bytes and nothing
// after it.
func TestReadUpdateRefusals(t *testing.T) {
	b := buildImage(t)
	cases := map[string][]byte{
		"not gzip":        b.update,
		"trailing bytes":  append(bytes.Clone(b.updateFile), 0),
		"truncated":       b.updateFile[:len(b.updateFile)/2],
		"a second stream": append(bytes.Clone(b.updateFile), b.updateFile...),
	}
	for name, data := range cases {
		if _, err := ReadUpdate(bytes.NewReader(data)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
