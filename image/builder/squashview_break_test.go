package builder

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/image/layout"
)

// The device measures its root as the kernel mounts it; image measure
// predicts it from the inputs (and update apply from go-diskfs's reading
// of the squashfs). unsquashfs is an independent reader of the squashfs
// the builder writes: the tree it extracts, measured with the device's
// measurement (modes as they are), must give the predicted policy, for
// roots with what real roots hold: a directory of many entries, empty
// and block-sized files, zeros, long names and link targets.
func TestPredictionMatchesUnsquashfsView_break(t *testing.T) {
	requireTool(t, "unsquashfs", "squashfs-tools")
	manifest := imagetest.Write(t)
	root := filepath.Join(filepath.Dir(manifest), "rootfs")
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 300 {
		write(fmt.Sprintf("usr/share/many/file-%03d", i), []byte(strconv.Itoa(i)), 0o644)
	}
	random := make([]byte, 300<<10)
	rand.Read(random)
	write("usr/lib/empty", nil, 0o644)
	write("usr/lib/block", random[:128<<10], 0o644)
	write("usr/lib/block+1", random[:128<<10+1], 0o755)
	write("usr/lib/random", random, 0o644)
	write("usr/lib/zeros", make([]byte, 512<<10), 0o644)
	write("usr/lib/"+strings.Repeat("n", 255), []byte("long name"), 0o644)
	write("usr/lib/deep/a/b/c/d/e/f/g/h/file", []byte("deep"), 0o644)
	if err := os.Symlink(strings.Repeat("./", 120)+"deep/a", filepath.Join(root, "usr/lib/longlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("deep", filepath.Join(root, "usr/lib/dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "var"), 0o755); err != nil { // an empty directory
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	want, err := PredictManifest(m, "")
	if err != nil {
		t.Fatal(err)
	}
	img := build(t, manifest, nil)
	fromImage, err := PredictImage(img)
	if err != nil {
		t.Fatal(err)
	}
	sq := filepath.Join(t.TempDir(), "root.squashfs")
	part := partitions(t, img)[layout.SlotA.RootPartition()-1]
	run(t, "dd", "if="+img, "of="+sq, "bs=512", "skip="+strconv.FormatInt(part.start, 10), "count="+strconv.FormatInt(part.size, 10), "status=none")
	out := filepath.Join(t.TempDir(), "root")
	run(t, "unsquashfs", "-no-xattrs", "-d", out, sq)
	device, err := m.Spec().Predict(os.DirFS(out), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := want.Marshal()
	b, _ := fromImage.Marshal()
	c, _ := device.Marshal()
	if !bytes.Equal(a, b) {
		t.Errorf("go-diskfs's reading of the image predicts another policy than the manifest:\n%s\n%s", b, a)
	}
	if !bytes.Equal(a, c) {
		t.Errorf("the root as unsquashfs extracts it measures to another policy than predicted:\n%s\n%s", c, a)
	}
}

// A root holds dangling symlinks (etc/resolv.conf -> ../run/..., made at
// run time). go-diskfs lists a symlink's xattrs through the link (on the
// build host's file system, from the workspace), so the build fails on
// one with the library's own words. Want: the image builds, with the link
// as it is, and the prediction matches.
func TestBuildKeepsDanglingSymlink_break(t *testing.T) {
	manifest := imagetest.Write(t)
	root := filepath.Join(filepath.Dir(manifest), "rootfs")
	if err := os.Symlink("../run/resolv.conf", filepath.Join(root, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	img := filepath.Join(t.TempDir(), "custodian.img")
	if err := Build(m, img, Options{}); err != nil {
		t.Fatalf("a root with a dangling symlink: %v", err)
	}
	imagePredictsManifest(t, img, m, "")
}
