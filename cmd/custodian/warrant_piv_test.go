package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/smartcard/pivtest"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tests/need"
)

// TestWarrantSignWithPIVCards follows docs/judge.md with two PIV cards in
// a virtual reader, through pcscd and OpenSC's opensc-pkcs11.so: find the
// key with pkcs11-tool, sign with the first card (a wrong PIN first costs
// a try and says so), co-sign with the second, and check the result with
// custodian warrant verify, the appliance's trust store (two signers,
// id-kp-documentSigning) and openssl cms -verify.
func TestWarrantSignWithPIVCards(t *testing.T) {
	need.Command(t, "openssl", "openssl")
	reader := pivtest.StartReader(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()

	root := trusttest.NewRoot(t, "Test Court Root", now)
	crl := root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	write(t, p("court-root.pem"), trusttest.PEM(root.Cert))
	write(t, p("court-root.crl.pem"), trusttest.CRLPEM(crl))
	write(t, p("court-root-and-crl.pem"), append(trusttest.PEM(root.Cert), trusttest.CRLPEM(crl)...))
	const pin = "314159"
	judge := pivtest.NewJudgeCard(t, root, "Judge Ada", pivtest.ECDSAP256, pin, now)
	second := pivtest.NewJudgeCard(t, root, "Clerk Bea", pivtest.RSA2048, pin, now)
	reader.Insert(t, 0, judge)
	reader.Insert(t, 1, second)

	// 2. Find your key on the card.
	m := pivtest.Module
	slots := pkcs11Tool(t, "--module", m, "--list-slots")
	certs := pkcs11Tool(t, "--module", m, "--list-objects", "--type", "cert")
	for _, want := range []string{"token label        : Judge Ada", "token label        : Clerk Bea"} {
		if !strings.Contains(slots, want) {
			t.Errorf("pkcs11-tool --list-slots lacks %q:\n%s", want, slots)
		}
	}
	if !strings.Contains(certs, "Certificate for Digital Signature") {
		t.Errorf("pkcs11-tool --list-objects --type cert:\n%s", certs)
	}

	// 1. Write the warrant.
	cli(t, true, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	cli(t, true, "warrant", "new", "--serial", "W-2026-0042", "--docket", "CR-17/2026",
		"--court", "District Court of Testing", "--agency", "Test Police",
		"--official", "Inspector Morse", "--offence", "fraud", "--target", "alice@example.org",
		"--key-id", "2026-11", "--custodian", "court-a", "--recipient", p("agency.pub"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--out", p("w.json"))

	// 3. Sign. A wrong PIN costs a try, says so, and writes nothing.
	sign := func(ok bool, pin, in, label, out string) string {
		t.Helper()
		t.Setenv("CUSTODIAN_PIN", pin) // read once and removed from the environment
		_, stderr := cli(t, ok, "warrant", "sign", "--in", in, "--module", m,
			"--key", "pkcs11:token="+strings.ReplaceAll(label, " ", "%20")+";object=SIGN%20key", "--out", out)
		return stderr
	}
	stderr := sign(false, "000000", p("w.json"), "Judge Ada", p("w.p7s"))
	if !strings.Contains(stderr, "wrong PIN, the card counted a failed try") || !strings.Contains(stderr, "hint: ") || judge.Tries() != pivtest.MaxTries-1 {
		t.Fatalf("wrong PIN: %d tries left, stderr %q", judge.Tries(), stderr)
	}
	if _, err := os.Stat(p("w.p7s")); !os.IsNotExist(err) {
		t.Fatalf("a refused PIN left %s: %v", p("w.p7s"), err)
	}
	sign(true, pin, p("w.json"), "Judge Ada", p("w.p7s"))
	sign(true, pin, p("w.p7s"), "Clerk Bea", p("w2.p7s"))
	if judge.Signatures() != 1 || second.Signatures() != 1 || judge.Tries() != pivtest.MaxTries {
		t.Fatalf("signatures %d and %d, tries %d", judge.Signatures(), second.Signatures(), judge.Tries())
	}

	// 4. Check before you send.
	out, _ := cli(t, true, "warrant", "show", "--in", p("w2.p7s"))
	if !strings.Contains(out, "Judge Ada") || !strings.Contains(out, "Clerk Bea") {
		t.Errorf("show:\n%s", out)
	}
	cli(t, true, "warrant", "verify", "--in", p("w2.p7s"), "--roots", p("court-root.pem"), "--court", "District Court of Testing", "--crl", p("court-root.crl.pem"))
	cmd := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", p("w2.p7s"),
		"-CAfile", p("court-root-and-crl.pem"), "-crl_check", "-purpose", "any", "-out", p("w.out.json"))
	if outb, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, outb)
	}

	// The appliance: a double lock with the document-signing EKU.
	cli(t, true, "--data-dir", data, "trust", "add-root", p("court-root.pem"), "--court", "District Court of Testing")
	cli(t, true, "--data-dir", data, "trust", "set-crl", p("court-root.crl.pem"))
	cli(t, true, "--data-dir", data, "trust", "set-policy", "--signers", "2", "--eku", pivtest.DocumentSigning.String())
	_, stderr = cli(t, false, "--data-dir", data, "warrant", "verify", "--in", p("w.p7s"))
	if !strings.Contains(stderr, "too_few_signers") {
		t.Errorf("one card under a double lock: %s", stderr)
	}
	out, _ = cli(t, true, "--data-dir", data, "warrant", "verify", "--in", p("w2.p7s"), "--custodian", "court-a", "--key-id", "2026-11")
	if !strings.Contains(out, "Judge Ada") || !strings.Contains(out, "Clerk Bea") {
		t.Errorf("co-signed verify output: %s", out)
	}
}

func pkcs11Tool(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("pkcs11-tool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool %v: %v\n%s", args, err, out)
	}
	return string(out)
}
