package update

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/bootsig"
	"github.com/custodian-project/custodian/tests/need"
)

const squashBombEnv = "CUSTODIAN_TEST_SQUASHBOMB_IMAGE"

// update apply predicts the image's policy by hashing every file of its
// root squashfs. A squashfs of 4 KiB (mksquashfs of a sparse file) holds
// a sparse file of zeros (16 GiB as easily as 2), which would keep a Pi 4 (no SHA instructions)
// hashing for minutes, a larger one for hours. The image pins that root
// itself (selfPinned: the pin is as trusted as boot.img, whose signature
// only the board checks), so the measurement's cap is what refuses it:
// it caps the bytes it hashes (measure.MaxTreeBytes) and refuses such a
// root at once, from the sizes, before hashing them. The child gets 5 s.
func TestPolicyRefusesRootOfHugeFiles(t *testing.T) {
	if file := os.Getenv(squashBombEnv); file != "" {
		im, err := openImage(readAll(t, file))
		if err == nil {
			_, err = im.Policy()
		}
		if err == nil || !strings.Contains(err.Error(), "the most a root may hold") {
			t.Fatalf("a root with a 2 GiB file: %v, want a refusal naming the cap", err)
		}
		return
	}
	need.Command(t, "mksquashfs", "squashfs-tools")
	b := buildImage(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for name, data := range map[string]string{"usr/bin/custodian": "x", "etc/custodian/config.toml": "y", "etc/custodian/trust/a.pem": "z"} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := filepath.Join(root, "big")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 2*measure.MaxTreeBytes); err != nil {
		t.Fatal(err)
	}
	sq := filepath.Join(dir, "root.sq")
	run(t, "mksquashfs", root, sq, "-comp", "gzip", "-noappend", "-all-root", "-no-progress", "-quiet")
	bomb := readAll(t, sq)
	img := selfPinned(t, b, bomb)
	file := filepath.Join(dir, "bomb.img")
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("root A holds a squashfs of %d bytes with a file of 2 GiB", len(bomb))
	cmd := exec.Command("sh", "-c", `ulimit -v 2000000; exec "$0" -test.run '^TestPolicyRefusesRootOfHugeFiles$' -test.timeout 5s -test.v`, os.Args[0])
	cmd.Env = append(os.Environ(), squashBombEnv+"="+file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		reason := "it failed"
		switch {
		case strings.Contains(string(out), "test timed out"):
			reason = "it was still hashing after 5 s"
		case strings.Contains(string(out), "out of memory"):
			reason = "it ran out of memory"
		}
		t.Fatalf("predicting the policy of an image whose root holds a sparse 2 GiB file: %s (%v); want a refusal\n%s", reason, err, evidence(out))
	}
}

// repin returns initramfs with its root.sha256 replaced by pin, the other
// entries as they were.
func repin(t *testing.T, initramfs []byte, pin image.RootPin) []byte {
	t.Helper()
	z, err := gzip.NewReader(bytes.NewReader(initramfs))
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(z)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w := cpio.NewWriter(zw)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == image.RootPinName {
			data = pin.Marshal()
			h.Size = int64(len(data))
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// selfPinned is the built image with root A replaced by root, its
// boot.img's initramfs pinning that root and boot.sig re-signed with a
// new key: an image made by someone who builds their own boot.img. The
// board would refuse its signature; update apply, which does not know the
// board's key, checks only that the root is the one boot.img pins.
func selfPinned(t *testing.T, b built, bomb []byte) []byte {
	t.Helper()
	need.Command(t, "mcopy", "mtools")
	dir := t.TempDir()
	im, err := openImage(b.img)
	if err != nil {
		t.Fatal(err)
	}
	bootImg := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(bootImg, im.bootImg, 0o644); err != nil {
		t.Fatal(err)
	}
	initramfs := filepath.Join(dir, image.InitramfsName)
	run(t, "mcopy", "-n", "-i", bootImg, "::"+image.InitramfsName, initramfs)
	if err := os.WriteFile(initramfs, repin(t, readAll(t, initramfs), image.PinRoot(bomb)), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mcopy", "-o", "-i", bootImg, initramfs, "::"+image.InitramfsName)
	newBoot := readAll(t, bootImg)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := bootsig.Sign(newBoot, 1, "2711", key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, BootSigName), sig.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	img := b.imageFile(t)
	part := fmt.Sprintf("%s@@%d", img, im.Boot.Start)
	run(t, "mcopy", "-o", "-i", part, bootImg, "::"+BootImgName)
	run(t, "mcopy", "-o", "-i", part, filepath.Join(dir, BootSigName), "::"+BootSigName)
	data := readAll(t, img)
	copy(data[im.Root.Start:im.Root.Start+im.Root.Size], make([]byte, im.Root.Size))
	copy(data[im.Root.Start:], bomb)

	return data
}
