package update

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/tests/need"
)

// writeLog records every write a Device receives, in order.
type writeLog struct {
	*os.File
	writes []loggedWrite
}

type loggedWrite struct {
	off  int64
	data []byte
}

func (w *writeLog) WriteAt(p []byte, off int64) (int, error) {
	w.writes = append(w.writes, loggedWrite{off, bytes.Clone(p)})
	return w.File.WriteAt(p, off)
}

// Commit writes one sector, which a power cut leaves either old or new.
// Replay every prefix of Commit's writes on the disk as it was
// before (a power cut after each write) and require autoboot.txt to read as
// the old or the new file, never as nothing or as a mix.
func TestCommitPowerCutLeavesOldOrNew(t *testing.T) {
	devFile := newDevice(t, commitSizes)
	orig := readAll(t, devFile)
	f, size := open(t, devFile)
	dev := &writeLog{File: f}
	if err := Commit(dev, size, Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, nil); err != nil {
		t.Fatal(err)
	}
	sectors := map[int64]bool{}
	for _, w := range dev.writes {
		for s := w.off / SectorSize; s < (w.off+int64(len(w.data))+SectorSize-1)/SectorSize; s++ {
			sectors[s] = true
		}
	}
	t.Logf("commit issued %d writes covering %d sectors", len(dev.writes), len(sectors))
	for _, w := range dev.writes {
		changed := 0
		for i := range w.data {
			if w.data[i] != orig[w.off+int64(i)] {
				changed++
			}
		}
		t.Logf("write at %d, %d bytes, %d bytes differ from before", w.off, len(w.data), changed)
	}
	if len(sectors) != 1 {
		t.Errorf("commit wrote %d distinct sectors, want one", len(sectors))
	}
	old, next := layout.Autoboot(layout.SlotA), layout.Autoboot(layout.SlotB)
	for k := 0; k <= len(dev.writes); k++ {
		img := bytes.Clone(orig)
		for _, w := range dev.writes[:k] {
			copy(img[w.off:], w.data)
		}
		got, err := ReadAutoboot(bytesAt(img), int64(len(img)))
		if err != nil || !(bytes.Equal(got, old) || bytes.Equal(got, next)) {
			t.Errorf("power cut after write %d of %d: autoboot.txt is %q (%v), neither slot A's nor slot B's", k, len(dev.writes), got, err)
		}
	}
}

// An autoboot.txt that is not the file image build writes (one an
// operator edited, or an older release wrote) would need the FAT rewritten
// with it, which a power cut can leave naming no slot: Commit refuses it,
// says what to do, and writes nothing.
func TestCommitRefusesAutobootOfAnotherLength(t *testing.T) {
	need.Command(t, "mkfs.vfat", "dosfstools")
	need.Command(t, "mcopy", "mtools")
	old := append(layout.Autoboot(layout.SlotA), "# boot slot A (edited by hand)\n"...)
	dir := t.TempDir()
	fat, txt := filepath.Join(dir, "autoboot.fat"), filepath.Join(dir, AutobootName)
	if err := os.WriteFile(txt, old, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.vfat", "-C", fat, "1024")
	run(t, "mcopy", "-i", fat, txt, "::"+AutobootName)
	devFile := disk(t, commitSizes, map[int][]byte{1: readAll(t, fat)})
	before := fileHash(t, devFile)
	f, size := open(t, devFile)
	dev := &writeLog{File: f}
	err := Commit(dev, size, Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, nil)
	if err == nil || !strings.Contains(err.Error(), "not the file custodian image build writes") {
		t.Fatalf("commit over an autoboot.txt of another length: %v, want a refusal", err)
	}
	if len(dev.writes) != 0 || fileHash(t, devFile) != before {
		t.Fatalf("a refused commit wrote %d times", len(dev.writes))
	}
}

// The same count on the card image build writes (its FAT16 autoboot
// partition, not the test's mkfs.vfat one).
func TestCommitOnBuiltImageWritesOneSector(t *testing.T) {
	b := buildImage(t)
	devFile := b.imageFile(t)
	f, size := open(t, devFile)
	dev := &writeLog{File: f}
	if err := Commit(dev, size, Boot{Slot: layout.SlotB, Tryboot: true, Pi: true}, nil); err != nil {
		t.Fatal(err)
	}
	sectors := map[int64]bool{}
	for _, w := range dev.writes {
		t.Logf("write at %d, %d bytes", w.off, len(w.data))
		for s := w.off / SectorSize; s < (w.off+int64(len(w.data))+SectorSize-1)/SectorSize; s++ {
			sectors[s] = true
		}
	}
	if len(sectors) != 1 {
		t.Errorf("commit on a built card wrote %d sectors in %d writes, want one", len(sectors), len(dev.writes))
	}
	got, err := ReadAutoboot(f, size)
	if err != nil || !bytes.Equal(got, layout.Autoboot(layout.SlotB)) {
		t.Errorf("autoboot.txt after commit on a built card: %q, %v", got, err)
	}
}
