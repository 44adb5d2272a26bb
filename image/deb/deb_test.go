package deb

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

type entry struct {
	name, body, link string
	typ              byte
}

var sample = []entry{
	{name: "./", typ: tar.TypeDir},
	{name: "./boot/", typ: tar.TypeDir},
	{name: "./boot/vmlinuz", body: "kernel bytes", typ: tar.TypeReg},
	{name: "./usr/lib/x/a.dtb", body: "dtb", typ: tar.TypeReg},
	{name: "./usr/lib/x/link.dtb", link: "a.dtb", typ: tar.TypeSymlink},
}

func tarOf(t testing.TB, entries []entry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Size: int64(len(e.body)), Linkname: e.link, Mode: 0o644}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compress(t testing.TB, data []byte, suffix string) []byte {
	var b bytes.Buffer
	switch suffix {
	case "":
		return data
	case ".gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case ".xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case ".zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	}
	return b.Bytes()
}

func arOf(members ...[2]string) []byte {
	var b bytes.Buffer
	b.WriteString(arMagic)
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12s%-6s%-6s%-8s%-10d`\n", m[0], "0", "0", "0", "100644", len(m[1]))
		b.WriteString(m[1])
		if len(m[1])%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func debOf(t testing.TB, entries []entry, suffix string) []byte {
	return arOf([2]string{"debian-binary", "2.0\n"}, [2]string{"control.tar.xz", "c"}, [2]string{"data.tar" + suffix, string(compress(t, tarOf(t, entries), suffix))})
}

func TestExtractEachCompression(t *testing.T) {
	for _, suffix := range []string{"", ".gz", ".xz", ".zst"} {
		files, err := Extract(bytes.NewReader(debOf(t, sample, suffix)), []string{"/boot/vmlinuz", "/usr/lib/x/a.dtb"}, DefaultLimits)
		if err != nil {
			t.Fatalf("data.tar%s: %v", suffix, err)
		}
		if string(files["/boot/vmlinuz"]) != "kernel bytes" || string(files["/usr/lib/x/a.dtb"]) != "dtb" {
			t.Errorf("data.tar%s: got %q", suffix, files)
		}
	}
}

func TestExtractRefuses(t *testing.T) {
	good := debOf(t, sample, ".xz")
	for _, c := range []struct {
		name string
		deb  []byte
		want []string
		lim  Limits
		msg  string
	}{
		{"a symlink", good, []string{"/usr/lib/x/link.dtb"}, DefaultLimits, "is a link to a.dtb"},
		{"a directory", good, []string{"/boot"}, DefaultLimits, "not a regular file"},
		{"a missing path", good, []string{"/boot/nothing"}, DefaultLimits, "is not in the package"},
		{"a relative wanted path", good, []string{"boot/vmlinuz"}, DefaultLimits, "absolute path"},
		{"a wanted path with ..", good, []string{"/boot/../etc/passwd"}, DefaultLimits, "absolute path"},
		{"a traversing entry", debOf(t, append(sample[:3:3], entry{name: "./../../etc/passwd", body: "x", typ: tar.TypeReg}), ".gz"), []string{"/boot/vmlinuz"}, DefaultLimits, "leaves the package's root"},
		{"a file over the limit", good, []string{"/boot/vmlinuz"}, Limits{Member: 1 << 20, Tar: 1 << 20, File: 4, Entries: 10}, "over the limit"},
		{"a member over the limit", good, []string{"/boot/vmlinuz"}, Limits{Member: 8, Tar: 1 << 20, File: 1 << 20, Entries: 10}, "over the limit"},
		{"too many entries", good, []string{"/boot/vmlinuz"}, Limits{Member: 1 << 20, Tar: 1 << 20, File: 1 << 20, Entries: 2}, "more than 2 entries"},
		{"a decompressed tar over the limit", good, []string{"/usr/lib/x/a.dtb"}, Limits{Member: 1 << 20, Tar: 1000, File: 1 << 20, Entries: 10}, "limit"},
		{"no ar header", []byte("hello"), []string{"/boot/vmlinuz"}, DefaultLimits, "no ar archive header"},
		{"no debian-binary", arOf([2]string{"data.tar", string(tarOf(t, sample))}), []string{"/boot/vmlinuz"}, DefaultLimits, "not debian-binary"},
		{"format 3", arOf([2]string{"debian-binary", "3.0\n"}), []string{"/boot/vmlinuz"}, DefaultLimits, "format 2.x"},
		{"no data member", arOf([2]string{"debian-binary", "2.0\n"}), []string{"/boot/vmlinuz"}, DefaultLimits, "no data.tar"},
		{"an unknown compression", arOf([2]string{"debian-binary", "2.0\n"}, [2]string{"data.tar.lz4", "x"}), []string{"/boot/vmlinuz"}, DefaultLimits, "unknown compression"},
		{"a truncated package", good[:len(good)-40], []string{"/usr/lib/x/a.dtb"}, DefaultLimits, "data.tar"},
	} {
		_, err := Extract(bytes.NewReader(c.deb), c.want, c.lim)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.msg)
		}
	}
}

// The reader agrees with dpkg-deb on a real Debian package, when one is
// in the cache (the appliance example downloads it).
func TestExtractMatchesDpkgDeb(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed (Debian package dpkg)")
	}
	dir := t.TempDir()
	deb := filepath.Join(dir, "x.deb")
	if err := os.WriteFile(deb, debOf(t, sample, ".xz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("dpkg-deb", "--fsys-tarfile", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb does not read the test package: %v\n%s", err, out)
	}
	got, err := Extract(bytes.NewReader(debOf(t, sample, ".xz")), []string{"/boot/vmlinuz"}, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	want, err := exec.Command("sh", "-c", "dpkg-deb --fsys-tarfile "+deb+" | tar -xOf - ./boot/vmlinuz").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got["/boot/vmlinuz"], want) {
		t.Errorf("got %q, dpkg-deb %q", got["/boot/vmlinuz"], want)
	}
}

func FuzzExtract(f *testing.F) {
	for _, s := range []string{"", ".gz", ".xz", ".zst"} {
		f.Add(debOf(f, sample, s))
	}
	lim := Limits{Member: 1 << 20, Tar: 4 << 20, File: 1 << 20, Entries: 1000}
	f.Fuzz(func(t *testing.T, data []byte) {
		files, err := Extract(bytes.NewReader(data), []string{"/boot/vmlinuz"}, lim)
		if err == nil && len(files) != 1 {
			t.Fatalf("no error and %d files", len(files))
		}
	})
}

// BenchmarkExtractKernelDeb reads a module out of Debian's kernel
// package (60 MB, data.tar.xz of 400 MB), when the appliance example's
// cache holds it: the whole tar is decompressed and walked.
func BenchmarkExtractKernelDeb(b *testing.B) {
	cache := os.Getenv("CUSTODIAN_CACHE")
	if cache == "" {
		home, _ := os.UserCacheDir()
		cache = filepath.Join(home, "custodian")
	}
	file := filepath.Join(cache, "debs", "linux-image-6.1.0-57-arm64_6.1.192-3_arm64.deb")
	if _, err := os.Stat(file); err != nil {
		b.Skip("no kernel package in the cache (docs/examples/appliance/fetch-debs.sh fetches it)")
	}
	for b.Loop() {
		f, err := os.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		_, err = Extract(f, []string{"/lib/modules/6.1.0-57-arm64/kernel/fs/ext4/ext4.ko"}, DefaultLimits)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}
