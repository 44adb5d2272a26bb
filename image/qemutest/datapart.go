package qemutest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/tests/need"
)

// WriteDataFiles puts files (paths relative to the data partition's root,
// which the appliance mounts at /var/lib/custodian) into the ext4 data
// partition of the disk image img, as the operator does on the build host
// before the first boot (the daemon's TLS files). The partition is found
// by its GPT name and changed with debugfs from e2fsprogs, so no mount is
// needed; files get mode 0600, their directories 0755 (the root init
// gives them to the daemon's user at boot).
func WriteDataFiles(t testing.TB, img string, files map[string][]byte) {
	t.Helper()
	need.Command(t, "debugfs", "e2fsprogs")
	start, size := dataPartition(t, img)
	work := t.TempDir()
	part := filepath.Join(work, "data.ext4")
	copyRange(t, img, part, start, size, false)

	var script strings.Builder
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		for _, dir := range parents(name) {
			if !dirs[dir] {
				dirs[dir] = true
				fmt.Fprintf(&script, "mkdir %s\n", dir)
			}
		}
		local := filepath.Join(work, fmt.Sprintf("file%d", i))
		if err := os.WriteFile(local, files[name], 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&script, "write %s %s\n", local, path.Clean(name))
	}
	commands := filepath.Join(work, "debugfs.cmds")
	if err := os.WriteFile(commands, []byte(script.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-w", "-f", commands, part).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs on the data partition: %v\n%s", err, out)
	}
	// debugfs reports a failed command on its output and still exits 0:
	// read every file back.
	for _, name := range names {
		got, err := exec.Command("debugfs", "-R", "cat "+path.Clean(name), part).Output()
		if err != nil || !bytes.Equal(got, files[name]) {
			t.Fatalf("debugfs did not write %s into the data partition (%v):\n%s", name, err, out)
		}
	}
	copyRange(t, part, img, start, size, true)
}

// dataPartition is the byte range of the data partition in img.
func dataPartition(t testing.TB, img string) (start, size int64) {
	t.Helper()
	return partitionRange(t, img, layout.DataPartition)
}

// FlipByte inverts the byte at offset within partition n of the disk
// image img: a card changed after it was written.
func FlipByte(t testing.TB, img string, n int, offset int64) {
	t.Helper()
	start, size := partitionRange(t, img, n)
	if offset >= size {
		t.Fatalf("offset %d is past partition %d's %d bytes", offset, n, size)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, start+offset); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, start+offset); err != nil {
		t.Fatal(err)
	}
}

// partitionRange is the byte range of partition n in img, found by its
// GPT name.
func partitionRange(t testing.TB, img string, n int) (start, size int64) {
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
	g, ok := table.(*gpt.Table)
	if !ok {
		t.Fatalf("%s has no GPT", img)
	}
	want := layout.PartitionName(n)
	for _, p := range g.Partitions {
		if p.Name == want {
			return p.GetStart(), p.GetSize()
		}
	}
	t.Fatalf("%s has no partition named %s", img, want)
	return 0, 0
}

// copyRange copies size bytes between a disk image at offset start and a
// partition file: from the image into a new file, or back (intoImage).
func copyRange(t testing.TB, from, to string, start, size int64, intoImage bool) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if intoImage {
		flags = os.O_WRONLY
	}
	dst, err := os.OpenFile(to, flags, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	var r io.Reader = io.NewSectionReader(src, start, size)
	var w io.Writer = dst
	if intoImage {
		r = io.LimitReader(src, size)
		w = io.NewOffsetWriter(dst, start)
	}
	if n, err := io.Copy(w, r); err != nil || n != size {
		t.Fatalf("copying the data partition: %d of %d bytes: %v", n, size, err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
