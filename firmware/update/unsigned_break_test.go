package update

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/builder"
	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/image/layout"
)

// An image built without --key has a boot.sig with no signature, which a
// board with secure boot never boots. update apply's own hint for a
// missing boot.sig is "build it with custodian image build --key", yet
// it writes an unsigned one into the inactive slot and reboots into it:
// the tryboot fails, the board comes back on the old slot with no word
// of why. Want: a refusal naming the missing signature, nothing written.
func TestApplyRefusesUnsignedBootSig_break(t *testing.T) {
	manifest := imagetest.Write(t)
	raw := readAll(t, manifest)
	small := strings.Replace(string(raw), "security_version = 1\n", "security_version = 1\n"+smallSizes, 1)
	if err := os.WriteFile(manifest, []byte(small), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := image.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "unsigned.img")
	if err := builder.Build(m, out, builder.Options{TargetSoC: "2711"}); err != nil {
		t.Fatal(err)
	}
	img := readAll(t, out)
	b := buildImage(t)
	devFile := newDevice(t, deviceSizes(b))
	before := fileHash(t, devFile)
	dev, size := open(t, devFile)
	im, err := openImage(img)
	if err == nil {
		_, err = Apply(dev, size, Boot{Slot: layout.SlotA, Pi: true}, im, approveAll)
	}
	if err == nil {
		t.Error("update apply wrote an image whose boot.sig carries no signature")
	}
	if fileHash(t, devFile) != before && err != nil {
		t.Error("a refused update changed the device")
	}
}
