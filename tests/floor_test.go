package tests

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

// TestInvariantNoDowngradeSharesAndKeysOpenOnlyWhileTheFloorAllows: no
// downgrade: shares and keys open only while the TPM's version floor
// allows their image; the floor only rises. A device on image v1 (security
// version 1) holds a share-mode share and a scoped key; the authority
// approves v2; the operator reseals, reboots into v2, finishes and raises
// the floor with the CLI. Booted into v1 again with the v1 files restored,
// the share, the scoped key and the checkpoint key open nothing, each
// with a downgrade error, and the release daemon refuses with the
// "downgrade" code. The CLI refuses to raise the floor above the running
// image or to lower it. Back on v2, a release goes through.
func TestInvariantNoDowngradeSharesAndKeysOpenOnlyWhileTheFloorAllows(t *testing.T) {
	now := time.Now().UTC()
	dir := t.TempDir()
	d, _, _ := enroll(t, "court-a", dir) // boots "approved": image v1
	c := newCourt(t, now)
	c.installOn(t, d, now)
	updateKey, updatePublic, err := escrow.NewUpdateKey("authority")
	if err != nil {
		t.Fatal(err)
	}
	verifier, approvalKey, _ := escrow.ParseUpdatePublic(updatePublic)
	keyFile := filepath.Join(dir, "update.key")
	os.WriteFile(keyFile, []byte(updateKey+"\n"), 0o600)

	raw, conn := openTPM(t, d)
	a, err := appliance.Open(d.data, conn)
	if err != nil {
		t.Fatal(err)
	}
	provisionLocal(t, a, conn, "2026-11", escrow.WithUpdateKey(verifier, nil))
	provisionLocal(t, a, conn, "2026-12", escrow.WithMode(escrow.ModeScoped), escrow.WithUpdateKey(verifier, approvalKey))
	a.Close()
	raw.Close()
	v1Files := saveSealed(t, d.data)

	newPolicy := filepath.Join(dir, "new-policy.json")
	p, err := bootpolicy.FromMeasurement("court-a", predicted("v2"), 2)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := p.Marshal()
	os.WriteFile(newPolicy, data, 0o644)
	note := filepath.Join(dir, "update.note")
	if out := mustCLI(t, "update", "sign", "--key", keyFile, "--policy", newPolicy, "--out", note); !strings.Contains(out, "(security version 2)") {
		t.Fatalf("update sign: %s", out)
	}
	mustCLI(t, d.args("reseal", "--update", note)...)
	reboot(t, d, "v2")
	mustCLI(t, d.args("reseal", "--finish")...)

	code, _, errOut := cli(t, d.args("floor", "raise", "--to", "3")...)
	if code == 0 || !strings.Contains(errOut, "cannot rise above") || !strings.Contains(errOut, "hint:") {
		t.Fatalf("raising above the running image: exit %d\n%s", code, errOut)
	}
	if out := mustCLI(t, d.args("floor", "raise")...); !strings.Contains(out, "floor raised from 1 to 2") {
		t.Fatalf("floor raise: %s", out)
	}
	if out := mustCLI(t, d.args("floor", "show")...); !strings.Contains(out, "floor: 2") || !strings.Contains(out, "key ID 2026-11: version 2") {
		t.Fatalf("floor show: %s", out)
	}
	code, _, errOut = cli(t, d.args("floor", "raise", "--to", "1")...)
	if code == 0 || !strings.Contains(errOut, "only rises") {
		t.Fatalf("lowering the floor: exit %d\n%s", code, errOut)
	}
	v2Files := saveSealed(t, d.data)

	// The old image, with its sealed files restored beside the ledger.
	reboot(t, d, "approved")
	restoreSealed(t, d.data, v1Files)
	code, _, errOut = cli(t, d.args("ledger", "checkpoint")...)
	if code == 0 || !strings.Contains(errOut, "below the device's floor 2") {
		t.Fatalf("checkpoint key on the old image: exit %d\n%s", code, errOut)
	}
	raw, conn = openTPM(t, d)
	a, err = appliance.Open(d.data, conn)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(a.SignerErr, tpm.ErrDowngrade) {
		t.Fatalf("checkpoint key: %v, want a downgrade", a.SignerErr)
	}
	for _, keyID := range []string{"2026-11", "2026-12"} {
		b, err := a.Bundle(keyID)
		if err != nil {
			t.Fatal(err)
		}
		if err := escrow.Provision(conn, b, "court-a", a.ImportKey); !errors.Is(err, tpm.ErrDowngrade) {
			t.Fatalf("%s on the old image: %v, want a downgrade", keyID, err)
		}
	}
	r := floorRig(t, d, c, conn, a)
	status, _, eb := r.c.submit(t, r.warrant(t, "W-downgrade"))
	if status != release.HTTPStatus(release.CodeDowngrade) || eb.Error.Code != release.CodeDowngrade {
		t.Fatalf("release on the old image: %d %+v", status, eb)
	}
	r.stop()
	raw.Close()

	// Back on the current image, everything opens.
	reboot(t, d, "v2")
	restoreSealed(t, d.data, v2Files)
	raw, conn = openTPM(t, d)
	defer raw.Close()
	a, err = appliance.Open(d.data, conn)
	if err != nil || a.SignerErr != nil {
		t.Fatalf("on the current image: %v, checkpoint key %v", err, a.SignerErr)
	}
	r = floorRig(t, d, c, conn, a)
	defer r.stop()
	r.releaseOK(t, r.warrant(t, "W-current"))
}

// predicted is what measure extends for label: the PCRs of that image.
func predicted(label string) tpm.PCRValues {
	pcrs := tpm.PCRValues{}
	for _, i := range []int{8, 9, 11, 12} {
		d := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", label, i)))
		pcrs = pcrs.Extend(i, d[:])
	}
	return pcrs
}

// openTPM connects to the device's swtpm, as its daemon does. Close it
// before the CLI runs: swtpm serves one client at a time.
func openTPM(t testing.TB, d *device) (transport.TPMCloser, *release.SerialTPM) {
	t.Helper()
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	return conn, release.Serialize(conn)
}

// reboot power-cycles the device's TPM and measures the image label.
func reboot(t testing.TB, d *device, label string) {
	t.Helper()
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d.sw.PowerCycle(t, conn)
	measure(t, conn, label)
}

// sealedFiles are what an attacker who keeps an old SD card restores.
var sealedFiles = []string{appliance.LedgerKeyBlob, "bundles/2026-11.json", "bundles/2026-12.json"}

func saveSealed(t testing.TB, dataDir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range sealedFiles {
		data, err := os.ReadFile(filepath.Join(dataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = data
	}
	return out
}

func restoreSealed(t testing.TB, dataDir string, files map[string][]byte) {
	t.Helper()
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(dataDir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// floorRig serves the appliance a with its daemon in this process.
func floorRig(t testing.TB, d *device, c *court, conn *release.SerialTPM, a *appliance.Appliance) *rig {
	t.Helper()
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{d: d, sw: d.sw, court: c, tpm: conn, a: a, agency: agency,
		pin: &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level, 16)}}
	r.start(t)
	return r
}

// TestDowngradeRefusedBeforeTheSummary: when the floor rose above the
// share's image while the daemon runs, the warrant is refused before the
// officer is asked to press, with the downgrade code and its own ledger
// entry, and no release entry is written.
func TestDowngradeRefusedBeforeTheSummary(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	if floor, err := tpm.RaiseFloor(r.tpm, 2); err != nil || floor != 2 {
		t.Fatalf("raising the floor: %d, %v", floor, err)
	}
	r.expectRefusal(t, r.warrant(t, "W-floor"), release.CodeDowngrade, true)
}
