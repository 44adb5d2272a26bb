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

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/image"
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
func TestPredictionMatchesUnsquashfsView(t *testing.T) {
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
	for _, odd := range []string{"with space", "ümlaut", "new\nline", "back\\slash"} {
		write("usr/share/odd/"+odd, []byte(odd), 0o644)
	}
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
// run time). go-diskfs lists a symlink's xattrs through the link, which
// fails on a dangling one; the builder's link shadow keeps it from
// following: the image builds, with the link as it is, and the
// prediction matches.
func TestBuildKeepsDanglingSymlink(t *testing.T) {
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

// buildRecovering is Build with a panic turned into an error that says so.
func buildRecovering(m *image.Manifest, out string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("image build panicked: %v", r)
		}
	}()
	return Build(m, out, Options{})
}

// go-diskfs reads a symlink's xattrs through the link, so without the
// builder's link shadow a link in the root to a file of the build host
// would carry that file's xattrs into the image (host metadata in the
// image, bytes that depend on the host, and a go-diskfs panic writing
// them). Two builds of the same inputs, one where the host file has an
// xattr and one where it has none, give the same bytes.
func TestSymlinkDoesNotCarryHostXattrs(t *testing.T) {
	hostFile := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(hostFile, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := imagetest.Write(t)
	if err := os.Symlink(hostFile, filepath.Join(filepath.Dir(manifest), "rootfs/etc/hostlink")); err != nil {
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	plain := filepath.Join(t.TempDir(), "plain.img")
	if err := Build(m, plain, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(hostFile, "user.build-host", []byte("secret-of-the-build-host"), 0); err != nil {
		t.Skipf("cannot set a user xattr here: %v", err)
	}
	tagged := filepath.Join(t.TempDir(), "tagged.img")
	if err := buildRecovering(m, tagged); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(plain)
	b, _ := os.ReadFile(tagged)
	if !bytes.Equal(a, b) {
		leak := bytes.Contains(b, []byte("secret-of-the-build-host"))
		t.Errorf("the image changed with an xattr of a build-host file a root symlink points to (its value in the image: %v)", leak)
	}
}

// posixACLDefault is a default ACL in the kernel's xattr format (version
// 2; user::rwx, user:65534:r-x, group::r-x, mask::r-x, other::r-x): new
// files below the directory get an access ACL, an xattr.
func posixACLDefault() []byte {
	var b []byte
	le := func(v uint32, n int) {
		for i := range n {
			b = append(b, byte(v>>(8*i)))
		}
	}
	le(2, 4)
	for _, e := range [][3]uint32{{0x01, 7, 0xffffffff}, {0x02, 5, 65534}, {0x04, 5, 0xffffffff}, {0x10, 5, 0xffffffff}, {0x20, 5, 0xffffffff}} {
		le(e[0], 2)
		le(e[1], 2)
		le(e[2], 4)
	}
	return b
}

// A build host whose temporary directory has a default ACL gives every
// file the builder stages an xattr, which go-diskfs would write into the
// squashfs (it refuses the ACL's key). The builder strips them: the image
// builds, the same bytes as on a host without them.
func TestBuildUnderTmpdirWithDefaultACL(t *testing.T) {
	m := mustLoad(t, imagetest.Write(t))
	plain := filepath.Join(t.TempDir(), "plain.img")
	if err := Build(m, plain, Options{}); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	if err := unix.Setxattr(tmp, "system.posix_acl_default", posixACLDefault(), 0); err != nil {
		t.Skipf("no POSIX ACLs on this file system: %v", err)
	}
	t.Setenv("TMPDIR", tmp)
	acl := filepath.Join(t.TempDir(), "acl.img")
	if err := buildRecovering(m, acl); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(plain)
	b, _ := os.ReadFile(acl)
	if !bytes.Equal(a, b) {
		t.Error("the image depends on the build host's temporary directory's ACL")
	}
}
