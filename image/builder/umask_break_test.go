package builder

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/image/imagetest"
)

// The same inputs built under a strict umask (077, common for root on
// hardened build hosts) and the usual one (022) give the same image.
func TestBuildReproducibleAcrossUmask_break(t *testing.T) {
	manifest := imagetest.Write(t)
	m := mustLoad(t, manifest)
	var imgs [2][]byte
	for i, mask := range []int{0o022, 0o077} {
		old := unix.Umask(mask)
		out := filepath.Join(t.TempDir(), "custodian.img")
		err := Build(m, out, Options{})
		unix.Umask(old)
		if err != nil {
			t.Fatalf("umask %03o: %v", mask, err)
		}
		imgs[i], _ = os.ReadFile(out)
	}
	if !bytes.Equal(imgs[0], imgs[1]) {
		t.Error("the image built under umask 077 differs from the one under 022")
	}
}
