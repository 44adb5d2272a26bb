package update

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/builder"
	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/tests/need"
)

const mib = 1 << 20

// built is a real image from the builder: its boot and root partitions'
// bytes, and the policy builder.PredictImage reads from it (the reference
// the update's own reading must agree with).
type built struct {
	boot, root []byte
	policy     *bootpolicy.Policy
}

var (
	builtOnce sync.Once
	builtImg  built
	builtErr  error
)

// buildImage builds the test manifest small (24 MiB) once per test binary.
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
	small := strings.Replace(string(raw), "security_version = 1\n", "security_version = 1\nimage_mib = 24\nboot_mib = 10\nboot_img_mib = 8\n", 1)
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
	out := filepath.Join(t.TempDir(), "built.img")
	if err := builder.Build(m, out, builder.Options{Key: key, TargetSoC: "2711"}); err != nil {
		return built{}, err
	}
	policy, err := builder.PredictImage(out)
	if err != nil {
		return built{}, err
	}
	d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return built{}, err
	}
	defer d.Close()
	// The builder writes MBR (boot 1, root 2) or the GPT layout (slot A).
	bootN, rootN := 1, 2
	if _, ok := d.Table.(*gpt.Table); ok {
		bootN, rootN = layout.SlotA.BootPartition(), layout.SlotA.RootPartition()
	} else if _, ok := d.Table.(*mbr.Table); !ok {
		return built{}, errors.New("the built image has no partition table")
	}
	var b built
	b.policy = policy
	for _, p := range []struct {
		n   int
		out *[]byte
	}{{bootN, &b.boot}, {rootN, &b.root}} {
		var buf bytes.Buffer
		if _, err := d.ReadPartitionContents(p.n, &buf); err != nil {
			return built{}, err
		}
		*p.out = buf.Bytes()
	}
	return b, nil
}

// disk writes a GPT disk of the appliance layout to a new file: parts
// gives each partition's size in MiB, names overrides GPT names, and
// content fills partitions, padded with zeros (anything else gets random
// bytes, so a stray write shows).
func disk(t *testing.T, sizes map[int]int64, names map[int]string, content map[int][]byte) string {
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
		name := layout.PartitionName(n)
		if v, ok := names[n]; ok {
			name = v
		}
		end := start + uint64(s*mib/SectorSize) - 1
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: n, Start: start, End: end, Type: gpt.LinuxFilesystem, Name: name})
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

// deviceSizes is the device's layout in MiB: slots as large as the built
// image's partitions.
var deviceSizes = map[int]int64{1: 1, 2: 10, 3: 10, 4: 13, 5: 13, 6: 2}

// newImage makes an image file: the built content in slot A.
func newImage(t *testing.T, b built, names map[int]string) string {
	sizes := map[int]int64{1: 1, 2: 10, 3: 10, 4: 13, 5: 13, 6: 1}
	return disk(t, sizes, names, map[int][]byte{2: b.boot, 4: b.root})
}

func newDevice(t *testing.T) string {
	return disk(t, deviceSizes, nil, map[int][]byte{1: autobootFAT(t)})
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

func openImage(t *testing.T, file string) (*Image, error) {
	f, size := open(t, file)
	return OpenImage(f, size)
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
// builder.PredictImage reads from the same content.
func TestApplyWritesTheInactiveSlotOnly(t *testing.T) {
	b := buildImage(t)
	for _, running := range []layout.Slot{layout.SlotA, layout.SlotB} {
		t.Run("from slot "+running.String(), func(t *testing.T) {
			im, err := openImage(t, newImage(t, b, nil))
			if err != nil {
				t.Fatal(err)
			}
			devFile := newDevice(t)
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
				t.Fatalf("the policy asked for approval is not the image's (image measure --image):\n%v\n%v", approved, b.policy)
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
	noSig := disk(t, map[int]int64{2: 10, 4: 13}, nil, map[int][]byte{2: withoutBootSig(t, b.boot), 4: b.root})
	cases := []struct {
		name    string
		image   string
		boot    Boot
		approve Approver
		want    string
	}{
		{"image too big", disk(t, map[int]int64{2: 11, 4: 13}, nil, map[int][]byte{2: b.boot, 4: b.root}),
			Boot{Slot: layout.SlotA}, approveAll, "does not fit"},
		{"wrong GPT names", newImage(t, b, map[int]string{4: "rootfs"}), Boot{Slot: layout.SlotA}, approveAll, `named "rootfs"`},
		{"missing boot.sig", noSig, Boot{Slot: layout.SlotA}, approveAll, "no boot.sig"},
		{"not approved", newImage(t, b, nil), Boot{Slot: layout.SlotA},
			func(*bootpolicy.Policy) error { return errors.New("not resealed") }, "not resealed"},
		{"tryboot", newImage(t, b, nil), Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, approveAll, "tryboot"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			devFile := newDevice(t)
			before := fileHash(t, devFile)
			dev, size := open(t, devFile)
			im, err := openImage(t, c.image)
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

// withoutBootSig is a copy of a boot partition with boot.sig removed
// (by mtools).
func withoutBootSig(t *testing.T, boot []byte) []byte {
	need.Command(t, "mdel", "mtools")
	file := filepath.Join(t.TempDir(), "boot.fat")
	if err := os.WriteFile(file, boot, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mdel", "-i", file, "::"+BootSigName)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func fileHash(t *testing.T, file string) [sha256.Size]byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// Commit in the tryboot of slot B rewrites autoboot.txt for B, and the
// FAT stays clean for fsck.vfat; nothing else on the disk changes.
func TestCommitRewritesAutoboot(t *testing.T) {
	need.Command(t, "fsck.vfat", "dosfstools")
	devFile := newDevice(t)
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
			devFile := newDevice(t)
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
