package update

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/tests/need"
)

const squashBombEnv = "CUSTODIAN_TEST_SQUASHBOMB_IMAGE"

// update apply predicts the image's policy by hashing every file of its
// root squashfs. A squashfs of 4 KiB (mksquashfs of a sparse file) holds
// a sparse file of zeros (16 GiB as easily as 2), which would keep a Pi 4 (no SHA instructions)
// hashing for minutes, a larger one for hours. Such a root is not the one
// boot.img's initramfs pins, and is refused by its digest before its tree
// is read; behind that, the measurement caps the bytes it hashes
// (measure.MaxTreeBytes, TestTreeDigestCapsTheBytesItHashes). The child
// gets 5 s.
func TestPolicyRefusesRootOfHugeFiles(t *testing.T) {
	if file := os.Getenv(squashBombEnv); file != "" {
		im, err := openImage(readAll(t, file))
		if err == nil {
			_, err = im.Policy()
		}
		if err == nil || !strings.Contains(err.Error(), "boot.img's pin") {
			t.Fatalf("a root with a 2 GiB file: %v, want a refusal naming the pin", err)
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
	img := append([]byte(nil), b.img...)
	tab, err := ReadTable(bytesAt(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	p := tab.Partitions[layout.SlotA.RootPartition()]
	if int64(len(bomb)) > p.Size {
		t.Fatalf("the squashfs (%d bytes) does not fit root A", len(bomb))
	}
	copy(img[p.Start:p.Start+p.Size], make([]byte, p.Size))
	copy(img[p.Start:], bomb)
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
