package qemutest

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cavaliergopher/cpio"
)

// File is one file of an initramfs made by WriteInitramfs.
type File struct {
	Data []byte
	Mode os.FileMode // permission bits
}

// WriteInitramfs writes a newc cpio archive (the kernel unpacks it
// uncompressed as well) holding files, by their paths, with the
// directories they need, and returns its path.
func WriteInitramfs(t testing.TB, files map[string]File) string {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	dirs := map[string]bool{".": true, "/": true}
	for _, name := range names {
		for _, dir := range parents(name) {
			if dirs[dir] {
				continue
			}
			dirs[dir] = true
			if err := w.WriteHeader(&cpio.Header{Name: dir, Mode: cpio.TypeDir | 0o755}); err != nil {
				t.Fatal(err)
			}
		}
		f := files[name]
		if err := w.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | cpio.FileMode(f.Mode.Perm()), Size: int64(len(f.Data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// parents lists the directories above name, outermost first.
func parents(name string) []string {
	var dirs []string
	for dir := path.Dir(name); dir != "." && dir != "/"; dir = path.Dir(dir) {
		dirs = append([]string{dir}, dirs...)
	}
	return dirs
}

// BuildArm64 builds the Go package pkg (a path as go build takes it,
// relative to the test's directory) for the appliance: linux/arm64,
// without cgo, static, with the build tags in tags (comma-separated, or
// empty). It returns the binary's path.
func BuildArm64(t testing.TB, pkg, tags string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), path.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-tags", tags, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s for linux/arm64: %v\n%s", pkg, err, output)
	}
	return out
}
