package measure

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
)

// fileDigest refuses a measured file that is a symlink "so what is
// measured is what the path names inside the image", but only the last
// component is looked at. A root whose etc/custodian is a relative link
// into var/lib/custodian measures, at boot, the file the squashfs keeps
// under the data partition's mount point (PCR 11 gets its digest); once
// the early init mounts the data partition there, the root init reads
// /etc/custodian/config.toml from the data partition, which is never
// measured. The PCRs are those of the approved image either way, so the
// shares open with a configuration that anyone with the SD card chose.
func TestBreakMeasuredConfigBehindSymlinkedDirectoryIsNotWhatIsRead(t *testing.T) {
	root := t.TempDir()
	write := func(name, data string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/bin/custodian", "the custodian binary", 0o755)
	write("var/lib/custodian/etc/config.toml", "the measured configuration", 0o644)
	write("var/lib/custodian/etc/trust/a.pem", "court root", 0o644)
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../var/lib/custodian/etc", filepath.Join(root, "etc/custodian")); err != nil {
		t.Fatal(err)
	}

	events, err := DefaultSpec().Events(os.DirFS(root), nil)
	if err != nil {
		return // refused: what is measured is what the path names in the image
	}
	measured := sha256.Sum256([]byte("the measured configuration"))
	for _, e := range events {
		if e.Name == "/etc/custodian/config.toml" && string(e.Measured) != string(measured[:]) {
			t.Fatalf("config measured as %x, want the hidden file's digest", e.Measured)
		}
	}

	// The early init mounts the data partition on var/lib/custodian: the
	// squashfs's files there are hidden, the partition's show.
	data := filepath.Join(root, "var/lib/custodian")
	if err := os.Rename(data, filepath.Join(root, "hidden-under-mount")); err != nil {
		t.Fatal(err)
	}
	write("var/lib/custodian/etc/config.toml", "[serve]\nlisten = \"0.0.0.0:9999\" # from the data partition\n", 0o644)
	read, err := os.ReadFile(filepath.Join(root, "etc/custodian/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(read) != measured {
		t.Errorf("measured the configuration at /etc/custodian/config.toml through the symlinked directory etc/custodian (digest %x); after the data partition is mounted the same path reads %q from the data partition", measured, read)
	}
}
