package builder

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/custodian-project/custodian/image/imagetest"
)

// measure.binary is the initramfs's /init and is measured on the device
// as a regular file (a symlink there is refused and the boot measures
// nothing). With usr/bin/custodian a symlink (here to a file outside the
// root, on the build host), the build reads /init through the link and
// writes an image whose early init cannot measure its root. Want: the
// build refuses, as image measure does.
func TestBuildRefusesSymlinkedBinary_break(t *testing.T) {
	manifest := imagetest.Write(t)
	host := filepath.Join(t.TempDir(), "custodian-on-the-host")
	if err := os.WriteFile(host, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(manifest), "rootfs/usr/bin/custodian")
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, bin); err != nil {
		t.Fatal(err)
	}
	m := mustLoad(t, manifest)
	_, predictErr := PredictManifest(m, "")
	buildErr := Build(m, filepath.Join(t.TempDir(), "custodian.img"), Options{})
	t.Logf("image measure: %v", predictErr)
	if predictErr != nil && buildErr == nil {
		t.Errorf("image build made an image whose binary image measure refuses (%v)", predictErr)
	}
}
