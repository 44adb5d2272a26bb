package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
)

// TestInvariantWarrantVerifyOnDeviceNeverVerifiesWhatTheDaemonRefuses: on
// a device, warrant verify never prints VERIFIED nor exits 0 for a warrant
// the daemon refuses or that it could not check as the daemon would: one
// already released while custodian serve holds the ledger (how a device
// runs), one signed before the ledger's replay floor, one checked for a
// key ID the device does not hold, and any warrant on a damaged ledger.
func TestInvariantWarrantVerifyOnDeviceNeverVerifiesWhatTheDaemonRefuses(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	used := filepath.Join(dir, "used.p7s")
	os.WriteFile(used, c.sign(t, "W-used", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now), 0o644)
	// Signed after the judge's certificate starts, before the ledger was made.
	early := filepath.Join(dir, "early.p7s")
	os.WriteFile(early, c.signAt(t, "W-early", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now, now.Add(-30*time.Minute)), 0o644)
	fresh := filepath.Join(dir, "fresh.p7s")
	os.WriteFile(fresh, c.sign(t, "W-fresh", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now), 0o644)

	dm := startDaemon(t, d, "--insecure-http")
	if code, stdout, stderr := releaseWithPress(t, d, dm, used, filepath.Join(dir, "release.json"), "--insecure-http"); code != 0 {
		t.Fatalf("release: exit %d\n%s%s", code, stdout, stderr)
	}
	data, _ := os.ReadFile(used)
	if _, _, body := dm.client.submit(t, data); body.Error.Code != "replayed" {
		t.Fatalf("the daemon on the used warrant: %s %s", body.Error.Code, body.Error.Message)
	}
	code, stdout, stderr := cli(t, d.args("warrant", "verify", "--in", used)...)
	if code != 3 || strings.Contains(stdout, "VERIFIED") || !strings.Contains(stderr, "not verified for custodian court-a") {
		t.Errorf("used warrant, daemon running: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = cli(t, d.args("--json", "warrant", "verify", "--in", used)...)
	var report struct {
		Verified   bool     `json:"verified"`
		Reason     string   `json:"reason"`
		NotChecked []string `json:"not_checked"`
	}
	if err := json.Unmarshal([]byte(stdout), &report); err != nil {
		t.Fatalf("--json output: %v\n%s", err, stdout)
	}
	if code != 3 || report.Verified || report.Reason != "not_checked" || len(report.NotChecked) != 1 {
		t.Errorf("--json, used warrant, daemon running: exit %d %s", code, stdout)
	}

	data, _ = os.ReadFile(early)
	if _, _, body := dm.client.submit(t, data); body.Error.Code != "signed_before_floor" {
		t.Fatalf("the daemon on the early warrant: %s %s", body.Error.Code, body.Error.Message)
	}
	dm.stop()
	code, stdout, stderr = cli(t, d.args("warrant", "verify", "--in", early)...)
	if code != 1 || strings.Contains(stdout, "VERIFIED") || !strings.Contains(stderr, "warrant refused on this device (signed_before_floor)") {
		t.Errorf("warrant the daemon refuses as signed_before_floor, daemon stopped: exit %d\n%s%s", code, stdout, stderr)
	}

	code, stdout, stderr = cli(t, d.args("warrant", "verify", "--in", fresh, "--key-id", "2099-01")...)
	if code == 0 || strings.Contains(stdout, "VERIFIED") || !strings.Contains(stderr, "--key-id 2099-01: this device (court-a) holds no share of it (it holds: 2026-11)") {
		t.Errorf("a key ID the device does not hold: exit %d\n%s%s", code, stdout, stderr)
	}
	if out := mustCLI(t, d.args("warrant", "verify", "--in", fresh)...); !strings.Contains(out, "VERIFIED for custodian court-a") ||
		!strings.Contains(out, "Envelopes:  fit each key ID's mode (2026-11)") {
		t.Errorf("an unused warrant, daemon stopped:\n%s", out)
	}

	// A damaged ledger (its journal and ledger.db): the daemon refuses
	// everything; verify checks nothing of it.
	for _, name := range ledger.Files {
		if err := os.WriteFile(filepath.Join(d.data, name), make([]byte, 4096), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr = cli(t, d.args("warrant", "verify", "--in", fresh)...)
	// Its journal is read first: zeros are no record, so no clean index
	// can be vouched for.
	unreadable := strings.Contains(stderr, "the ledger file is damaged or is not a ledger") || strings.Contains(stderr, "was not closed cleanly")
	if code != 3 || strings.Contains(stdout, "VERIFIED") || !unreadable || !strings.Contains(stderr, "custodian ledger verify") || strings.Contains(stderr, "file size") {
		t.Errorf("damaged ledger: exit %d\n%s%s", code, stdout, stderr)
	}
}
