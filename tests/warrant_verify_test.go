package tests

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
)

// TestWarrantVerifyOnDeviceReadsItsAddressingAndLedger: on a device,
// warrant verify checks a warrant against the custodian ID and key IDs the
// data directory holds without being told them, says whether its ledger
// used the warrant, and refuses (non-zero, naming the ledger entry) a warrant that
// was released here: VERIFIED would say it can still be used. While the
// daemon holds the ledger, it says what it did not check and exits 3.
func TestWarrantVerifyOnDeviceReadsItsAddressingAndLedger(t *testing.T) {
	d, p7s := networkDevice(t, "W-verify-used")
	verify := d.args("warrant", "verify", "--in", p7s)

	out := mustCLI(t, verify...)
	for _, want := range []string{"Used:       no (not in this device's ledger)", "VERIFIED for custodian court-a"} {
		if !strings.Contains(out, want) {
			t.Errorf("before the release, verify lacks %q:\n%s", want, out)
		}
	}

	dm := startDaemon(t, d, "--insecure-http")
	code, out, errOut := cli(t, verify...)
	if code != 3 || strings.Contains(out, "VERIFIED") ||
		!strings.Contains(out, "Not checked: whether it was used here, and the replay floor: another custodian process holds the ledger") ||
		!strings.Contains(errOut, "hint: stop custodian serve for a moment and verify again") {
		t.Errorf("with the daemon running, verify does not say the ledger went unchecked: exit %d\n%s%s", code, out, errOut)
	}
	code, stdout, stderr := releaseWithPress(t, d, dm, p7s, t.TempDir()+"/release.json", "--insecure-http")
	if code != 0 {
		t.Fatalf("release: exit %d\n%s%s", code, stdout, stderr)
	}
	dm.stop()

	code, stdout, stderr = cli(t, append([]string{"--json"}, verify...)...)
	var report struct {
		Verified bool   `json:"verified"`
		UsedAt   *int64 `json:"used_at_entry"`
		Reason   string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(stdout), &report); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if code == 0 || report.Verified || report.UsedAt == nil || report.Reason != "replayed" {
		t.Fatalf("a used warrant: exit %d, %s%s", code, stdout, stderr)
	}
	index := *report.UsedAt
	if e := ledgerEntry(t, d, index); e.Kind != ledger.KindRelease || e.KeyID != "2026-11" {
		t.Fatalf("entry %d, named as the one that used the warrant, is %+v", index, e)
	}

	code, stdout, stderr = cli(t, verify...)
	if code == 0 || strings.Contains(stdout, "VERIFIED") ||
		!strings.Contains(stdout, fmt.Sprintf("Used:       yes, ledger entry %d", index)) ||
		!strings.Contains(stderr, fmt.Sprintf("custodian: error: warrant already used on this device: ledger entry %d records it", index)) ||
		!strings.Contains(stderr, fmt.Sprintf("hint: custodian ledger prove --index %d", index)) {
		t.Fatalf("a used warrant: exit %d\n%s%s", code, stdout, stderr)
	}

	// Another custodian's view is not this device's: no ledger check.
	code, _, stderr = cli(t, d.args("warrant", "verify", "--in", p7s, "--custodian", "court-b", "--key-id", "2026-11")...)
	if code == 0 || !strings.Contains(stderr, "warrant refused (not_addressed)") {
		t.Fatalf("verify for a custodian the warrant does not name: exit %d %s", code, stderr)
	}
}

// ledgerEntry reads entry i of the device's ledger through the TPM.
func ledgerEntry(t *testing.T, d *device, i int64) *ledger.Entry {
	t.Helper()
	var e *ledger.Entry
	onDevice(t, d, func(a *appliance.Appliance, _ transport.TPM) {
		data, err := a.Ledger.Entry(i)
		if err == nil {
			e, err = ledger.ParseEntry(data)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
	return e
}
