package imagefs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
)

// smallFAT makes a FAT file system of sizeMiB holding one file of n
// bytes, named FILE.BIN, and returns its bytes and the file's first
// cluster.
func smallFAT(t testing.TB, sizeMiB int, fsType filesystem.Type, n int) []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fat.img")
	d, err := diskfs.Create(file, int64(sizeMiB)<<20, SectorSize)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: fsType, Reproducible: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile("/FILE.BIN", os.O_CREATE|os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte{'x'}, n)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d.Close()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// setEntry sets the FAT entry of cluster c in every FAT copy.
func setEntry(t *testing.T, img []byte, c int64, v uint32) {
	t.Helper()
	g, err := readGeometry(bytes.NewReader(img), 0, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if g.kind != fat16Kind {
		t.Fatalf("want a FAT16 test file system, got FAT%d", g.kind)
	}
	for i := range int64(img[16]) {
		off := g.fatStart + i*g.fatBytes + 2*c
		img[off], img[off+1] = byte(v), byte(v>>8)
	}
}

// firstCluster finds FILE.BIN's first cluster in the FAT16 root directory.
func firstCluster(t *testing.T, img []byte) int64 {
	t.Helper()
	g, _ := readGeometry(bytes.NewReader(img), 0, int64(len(img)))
	root := g.fatStart + int64(img[16])*g.fatBytes
	for e := root; e < root+512*32; e += 32 {
		if string(img[e:e+11]) == "FILE    BIN" {
			return int64(img[e+26]) | int64(img[e+27])<<8
		}
	}
	t.Fatal("no FILE.BIN in the root directory")
	return 0
}

// A FAT whose chain loops or leaves the data area is refused as damaged
// before go-diskfs follows it (it would allocate without end on a loop);
// an intact one opens and reads.
func TestOpenFATRefusesBrokenChains(t *testing.T) {
	intact := smallFAT(t, 8, filesystem.TypeFat16, 3000)
	open := func(img []byte) ([]byte, error) {
		fsys, err := OpenFAT(NewStorage(bytes.NewReader(img), nil, int64(len(img))), 0, int64(len(img)))
		if err != nil {
			return nil, err
		}
		return ReadFile(fsys, "FILE.BIN", 1<<20)
	}
	if data, err := open(intact); err != nil || len(data) != 3000 {
		t.Fatalf("the intact file system: %d bytes, %v", len(data), err)
	}
	c := firstCluster(t, intact)
	for name, v := range map[string]uint32{"loop to itself": uint32(c), "out of range": 0xfff0, "into a free cluster": uint32(c + 100), "reserved value": 1} {
		t.Run(name, func(t *testing.T) {
			img := bytes.Clone(intact)
			setEntry(t, img, c, v)
			_, err := open(img)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "the file system is damaged") {
				t.Fatalf("got %v, want the file system is damaged", err)
			}
		})
	}
}

// checkFAT reads sizes from outside: whatever the bytes, it returns
// without panicking, and what it accepts go-diskfs opens without panic.
func FuzzCheckFAT(f *testing.F) {
	f.Add(smallFAT(f, 1, filesystem.TypeFat12, 3000)[:64<<10])
	f.Fuzz(func(t *testing.T, img []byte) {
		if ext, err := RootFileExtent(bytes.NewReader(img), 0, int64(len(img)), "FILE    BIN"); err == nil && (ext.Clusters < 1 || ext.Off < 0 || ext.Off >= int64(len(img))) {
			t.Fatalf("an extent outside the file system: %+v", ext)
		}
		if _, err := checkFAT(bytes.NewReader(img), 0, int64(len(img))); err != nil {
			return
		}
		if _, err := OpenFAT(NewStorage(bytes.NewReader(img), nil, int64(len(img))), 0, int64(len(img))); errors.Is(err, ErrDamaged) && !strings.Contains(err.Error(), "cluster") {
			t.Logf("go-diskfs: %v", err)
		}
	})
}
