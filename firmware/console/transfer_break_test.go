package console

import (
	"strings"
	"testing"
)

// docs/operator.md, step 12.4, sends the new image through the console
// ("put custodian-2.img, about two hours for 64 MiB") for update apply
// --image. put refuses anything over MaxTransfer (8 MiB), and the
// smallest image custodian image build makes (docs/image.md: autoboot 8,
// two boot slots of at least 24, two roots of at least 16, data 64) is
// over 150 MiB: the documented update cannot be done. A file just over
// the cap stands for it here (a real image would cost the machine too
// much memory in a test).
func TestBreakConsolePutRefusesTheImageTheUpdateRunbookSends(t *testing.T) {
	f := newFixture(t)
	img := make([]byte, MaxTransfer+3) // the smallest image is ~19 times this
	out := f.session(t, "put custodian-2.img\n"+base64Lines(img)+".\n")
	if strings.Contains(out, "larger than") {
		t.Errorf("put of a disk image, as the update runbook does it, is refused: %q", lastLines(out, 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// put caps the base64 text, not the bytes it decodes to: EncodedLen
// rounds up, so a file of MaxTransfer+1 bytes is stored, and get, which
// caps the bytes, then refuses to send the file back.
func TestBreakConsolePutStoresWhatGetRefuses(t *testing.T) {
	f := newFixture(t)
	img := make([]byte, MaxTransfer+1)
	out := f.session(t, "put big\n"+base64Lines(img)+".\n")
	if !strings.Contains(out, "stored transfer/big") {
		t.Fatalf("put refused it: %q", lastLines(out, 3))
	}
	if _, err := f.console.Files.Get("big"); err != nil {
		t.Errorf("put stored a file that get refuses: %v", err)
	}
}
