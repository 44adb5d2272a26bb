package builder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/image/imagetest"
)

// A rootfs.files destination below a symlink of rootfs.dir (an absolute
// link, as roots have: opt -> /some/dir) is written through the link:
// rootTree copies rootfs.dir with its symlinks, then MkdirAll and
// WriteFile follow them, so the build writes the file on the build host
// outside its work directory, and the image lacks it. Both the build and
// image measure --manifest (PredictManifest) run rootTree. Want: a
// refusal naming the symlink, and nothing written outside.
func TestRootFileBelowSymlinkStaysInTheImage_break(t *testing.T) {
	manifest := imagetest.Write(t)
	dir := filepath.Dir(manifest)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "rootfs", "opt")); err != nil {
		t.Fatal(err)
	}
	text, _ := os.ReadFile(manifest)
	s := strings.Replace(string(text), "dir = \"rootfs\"\n", "dir = \"rootfs\"\nfiles = [{ src = \"boot/tpm_tis.ko\", dst = \"opt/planted\" }]\n", 1)
	if err := os.WriteFile(manifest, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	_, predictErr := PredictManifest(m, "")
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Errorf("image measure --manifest wrote %s on the build host, outside the image (through rootfs/opt)", filepath.Join(outside, "planted"))
		os.Remove(filepath.Join(outside, "planted"))
	}
	buildErr := Build(m, filepath.Join(t.TempDir(), "custodian.img"), Options{})
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Errorf("image build wrote %s on the build host, outside the image (through rootfs/opt)", filepath.Join(outside, "planted"))
	}
	if predictErr == nil || buildErr == nil {
		t.Errorf("a rootfs file below a symlink was accepted: predict %v, build %v", predictErr, buildErr)
	}
}
