package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/hsm/attest"
	"github.com/custodian-project/custodian/tpm"
)

// TestInvariantNewerRefusalWithdrawsRecord: a signed record cannot be
// taken back, so the authority withdraws it with a refusal of a higher
// serial; an auditor given both records refuses the device, and a newer
// verified record reinstates it.
func TestInvariantNewerRefusalWithdrawsRecord(t *testing.T) {
	s := newAuditorSetup(t)
	nonce := "00112233445566778899aabbccddeeff"
	att := s.attest(nonce)
	withdrawn := filepath.Join(s.dir, "court-a.2.record")
	code, _, errOut := custodian(t, "enroll", "verify", "--in", s.enrollment, "--refuse", "withdrawn",
		"--record-out", withdrawn, "--signing-key", s.authorityKey, "--serial", "2")
	if code != 0 {
		t.Fatalf("the authority's refusal: exit %d %q", code, errOut)
	}
	args := append(s.verifyArgs(nonce, att, s.record), "--record", withdrawn)
	code, out, errOut := custodian(t, args...)
	if code == 0 || !strings.Contains(errOut, "refused this enrollment") || !strings.Contains(errOut, "withdrawn") || strings.Contains(out, "verifies") {
		t.Fatalf("the withdrawn record still vouches: exit %d %q %q", code, out, errOut)
	}
	reinstated := filepath.Join(s.dir, "court-a.3.record")
	mustRun(t, "enroll", "verify", "--in", s.enrollment, "--secret", filepath.Join(s.dir, "challenge.secret"), "--ek-roots", s.roots,
		"--record-out", reinstated, "--signing-key", s.authorityKey, "--serial", "3")
	if out := mustRun(t, append(args, "--record", reinstated)...); !strings.Contains(out, "attestation of court-a verifies") {
		t.Fatalf("reinstated: %q", out)
	}
}

// TestInvariantFailedCheckSignsNoRecord: the authority's own mistake (no
// --ek-roots for a TPM whose vendor CA is not built in) writes no record:
// a refusal is only ever signed on purpose, with --refuse.
func TestInvariantFailedCheckSignsNoRecord(t *testing.T) {
	s := newAuditorSetup(t)
	slip := filepath.Join(s.dir, "slip.record")
	code, _, errOut := custodian(t, "enroll", "verify", "--in", s.enrollment, "--secret", filepath.Join(s.dir, "challenge.secret"),
		"--record-out", slip, "--signing-key", s.authorityKey, "--serial", "2")
	if code == 0 || !strings.Contains(errOut, "no record was written") || !strings.Contains(errOut, "--refuse") || !strings.Contains(errOut, "--ek-roots") {
		t.Fatalf("exit %d %q", code, errOut)
	}
	if _, err := os.Stat(slip); err == nil {
		t.Fatal("a failed check wrote a record")
	}
}

// TestInvariantClearedTPMDoesNotAttestWithoutItsLedger: the quote covers
// the checkpoint but not the custodian ID. A TPM of court-a, cleared and
// without its ledger, still quotes with court-a's AK; attest verify
// refuses to run without the ledger key, and with it refuses a checkpoint
// court-a's ledger key did not sign.
func TestInvariantClearedTPMDoesNotAttestWithoutItsLedger(t *testing.T) {
	s := newAuditorSetup(t)
	host, port, _ := strings.Cut(strings.TrimPrefix(s.sw.Spec(), "swtpm:"), ":")
	clear := exec.Command("tpm2_clear", "-c", "p")
	clear.Env = append(os.Environ(), "TPM2TOOLS_TCTI=swtpm:host="+host+",port="+port)
	if out, err := clear.CombinedOutput(); err != nil {
		t.Fatalf("tpm2_clear: %v %s", err, out)
	}
	conn, err := tpm.Open(s.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	nonce := "00112233445566778899aabbccddeeff"
	nb, _ := hex.DecodeString(nonce)
	policy, err := readPolicy(s.policy)
	if err != nil {
		t.Fatal(err)
	}
	a, err := attest.Create(conn, "court-a", nb, policy.PCRs.Indices(), mustRead(t, filepath.Join(s.dir, "run", measure.LogFile)), "no ledger here\n", time.Now())
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(a)
	att := filepath.Join(s.dir, "att-cleared.json")
	os.WriteFile(att, data, 0o644)

	args := s.verifyArgs(nonce, att, s.record)
	withoutKey := append(append([]string{}, args[:12]...), args[14:]...)
	code, out, errOut := custodian(t, withoutKey...)
	if code == 0 || !strings.Contains(errOut, "ledger-key") || strings.Contains(out, "verifies") {
		t.Fatalf("without --ledger-key: exit %d %q %q", code, out, errOut)
	}
	code, out, errOut = custodian(t, args...)
	if code == 0 || !strings.Contains(errOut, "checkpoint does not verify") || strings.Contains(out, "verifies") {
		t.Fatalf("with court-a's ledger key: exit %d %q %q", code, out, errOut)
	}
}

// TestKeyFlagsReadFilesAtAnyPath: a key flag reads the file its argument
// names wherever it is (a '+' or a custodian/ directory in the path), and
// a missing or wrong file is refused with the flag named and a hint.
func TestKeyFlagsReadFilesAtAnyPath(t *testing.T) {
	s := newAuditorSetup(t)
	dir := filepath.Join(s.dir, "keys+2026", "custodian")
	os.MkdirAll(dir, 0o755)
	pub, ledgerPub := filepath.Join(dir, "authority.pub"), filepath.Join(dir, "ledger-key.pub")
	os.WriteFile(pub, mustRead(t, s.authorityPub), 0o644)
	os.WriteFile(ledgerPub, mustRead(t, s.ledgerKey), 0o644)
	nonce := "00112233445566778899aabbccddeeff"
	att := s.attest(nonce)
	mustRun(t, "attest", "verify", "--enrollment", s.enrollment, "--policy", s.policy, "--nonce", nonce, "--in", att,
		"--ek-roots", s.roots, "--ledger-key", ledgerPub, "--record", s.record, "--authority-key", pub)

	secret := filepath.Join(s.dir, "challenge.secret")
	base := []string{"enroll", "verify", "--in", s.enrollment, "--ek-roots", s.roots}
	for name, c := range map[string]struct {
		args []string
		says string
	}{
		"missing record":        {append(base, "--record", filepath.Join(s.dir, "nope.record"), "--authority-key", s.authorityPub), "--record:"},
		"record is a device":    {append(base, "--record", "/dev/zero", "--authority-key", s.authorityPub), "not a regular file"},
		"missing authority key": {append(base, "--record", s.record, "--authority-key", filepath.Join(s.dir, "nope.pub")), "--authority-key:"},
		"private key as key":    {append(base, "--record", s.record, "--authority-key", s.authorityKey), "private signing key"},
		"ledger key as key":     {append(base, "--record", s.record, "--authority-key", s.ledgerKey), "not signed by the escrow authority's key"},
		"missing signing key": {append(base, "--secret", secret, "--record-out", filepath.Join(s.dir, "x.record"), "--signing-key",
			filepath.Join(s.dir, "nope.key"), "--serial", "2"), "--signing-key:"},
		"pub as signing key": {append(base, "--secret", secret, "--record-out", filepath.Join(s.dir, "y.record"), "--signing-key",
			s.authorityPub, "--serial", "2"), "--signing-key: not a signed-note private key"},
		"record as enrollment": {[]string{"enroll", "verify", "--in", s.record, "--record", s.record, "--authority-key", s.authorityPub},
			"is not an enrollment (enrollment.json, from custodian enroll): it is an enrollment record"},
	} {
		code, out, errOut := custodian(t, c.args...)
		if code == 0 || !strings.Contains(errOut, c.says) || !strings.Contains(errOut, "hint:") {
			t.Errorf("%s: exit %d %q %q; want %q and a hint", name, code, out, errOut, c.says)
		}
	}
}

// TestEnrollKeygenMakesOnlyUsableKeys: keygen refuses a name signed notes
// cannot carry, and the same or an existing file for --out and --pub,
// before it writes anything.
func TestEnrollKeygenMakesOnlyUsableKeys(t *testing.T) {
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	for name, c := range map[string]struct {
		args []string
		says string
	}{
		"space":       {[]string{"--name", "a b", "--out", path("a.key"), "--pub", path("a.pub")}, "not a usable key name"},
		"plus":        {[]string{"--name", "x+y", "--out", path("a.key"), "--pub", path("a.pub")}, "not a usable key name"},
		"same file":   {[]string{"--out", path("d.key"), "--pub", path("d.key")}, "the same file"},
		"pub existed": {[]string{"--out", path("e.key"), "--pub", path("taken.pub")}, "--pub: "},
	} {
		os.WriteFile(path("taken.pub"), []byte("x"), 0o644)
		code, _, errOut := custodian(t, append([]string{"enroll", "keygen"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.says) || !strings.Contains(errOut, "hint:") {
			t.Errorf("%s: exit %d %q; want %q", name, code, errOut, c.says)
		}
		for _, f := range []string{"a.key", "a.pub", "d.key", "e.key"} {
			if _, err := os.Stat(path(f)); err == nil {
				t.Fatalf("%s: %s was written", name, f)
			}
		}
	}
	out := mustRun(t, "--json", "enroll", "keygen", "--name", "court-escrow-2026", "--out", path("k.key"), "--pub", path("k.pub"))
	var got struct {
		VerifierKey string `json:"verifier_key"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v %q", err, out)
	}
	if _, err := note.NewVerifier(got.VerifierKey); err != nil || strings.TrimSpace(string(mustRead(t, path("k.pub")))) != got.VerifierKey {
		t.Fatalf("the verifier key %q: %v", got.VerifierKey, err)
	}
}
