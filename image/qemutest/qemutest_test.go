package qemutest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestKernelLoadsTPMTISAndExtendsPCR boots Debian's arm64 kernel with an
// initramfs whose /init (testdata/pcrinit) loads tpm_tis_core and the
// tpm_tis.ko that .ci/kernel built, extends PCR 8 through /dev/tpmrm0 and
// reads it back: the value must be the extension computed here, so the
// kernel, the module, QEMU's tpm-tis-device and swtpm carry TPM commands.
func TestKernelLoadsTPMTISAndExtendsPCR(t *testing.T) {
	k := RequireKernel(t)
	init := BuildArm64(t, "./testdata/pcrinit", "")
	files := map[string]File{
		"init":                                {Data: readFile(t, init), Mode: 0o755},
		"modules/order":                       {Data: []byte(filepath.Base(k.TPMCore) + "\ntpm_tis.ko\n"), Mode: 0o644},
		"modules/tpm_tis.ko":                  {Data: readFile(t, k.TPMTis), Mode: 0o644},
		"modules/" + filepath.Base(k.TPMCore): {Data: readFile(t, k.TPMCore), Mode: 0o644},
	}
	const event = "qemutest-event"
	m := Boot(t, Config{Kernel: k.Image, Initrd: WriteInitramfs(t, files), Append: "quiet pcrinit.event=" + event})

	got := m.Expect(regexp.MustCompile(`^pcrinit: (pcr 8 sha256 ([0-9a-f]{64})|failed: .*)$`), 2*time.Minute)
	if got[2] == "" {
		t.Fatalf("the machine's init reported: %s", got[1])
	}
	digest := sha256.Sum256([]byte(event))
	want := sha256.Sum256(append(make([]byte, 32), digest[:]...))
	if got[2] != hex.EncodeToString(want[:]) {
		t.Errorf("PCR 8 after one extension = %s, want %x", got[2], want)
	}
	if err := m.WaitExit(time.Minute); err != nil {
		t.Error(err)
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
