package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// issuanceFromRunbook returns the judge.ext lines and the openssl command
// that the court trust admin runbook shows for issuing a judge's
// certificate.
func issuanceFromRunbook(t *testing.T) (ext, command string) {
	t.Helper()
	data, err := os.ReadFile("../../docs/court-trust-admin.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "cat > judge.ext <<'EOF'\n")
	if !ok {
		t.Fatal("the runbook no longer shows judge.ext")
	}
	ext, rest, _ = strings.Cut(rest, "EOF\n")
	command, _, _ = strings.Cut(rest, "\n")
	if !strings.HasPrefix(command, "openssl x509 -req ") {
		t.Fatalf("the runbook's issuing command is %q", command)
	}
	return ext, command
}

// TestRunbookJudgeCertificateSigns: a judge's certificate issued with the
// runbook's openssl command carries documentSigning, and its warrants
// verify under the root pinned for the court.
func TestRunbookJudgeCertificateSigns(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	ext, command := issuanceFromRunbook(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()
	root := trusttest.NewRoot(t, "District Court Root", now)
	rootKey, err := x509.MarshalPKCS8PrivateKey(root.Key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, p("court-root.pem"), trusttest.PEM(root.Cert))
	write(t, p("court-root.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rootKey}))
	write(t, p("judge.ext"), []byte(ext))
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	// The card's request (on a PIV card: made by the card's tools).
	run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "judge.key", "-subj", "/CN=Judge Ada Lovelace", "-out", "judge.csr")
	run("sh", "-c", command)

	certs, err := certfile.Certificates(mustRead(t, p("judge.pem")))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(mustRead(t, p("judge.key")))
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	store := trust.New()
	const court = "District Court of Testing"
	if _, err := store.AddRoot(trusttest.PEM(root.Cert), court); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetCRL(root.CRL(t, now.Add(-time.Minute), now.Add(time.Hour)), now); err != nil {
		t.Fatal(err)
	}
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	w := &warrant.Warrant{Version: 1, Serial: "W-1", Docket: "CR-1/2026", Court: court, Agency: "Test Police",
		Official: "Inspector Morse", Offence: "fraud", Targets: []string{"alice@example.org"},
		NotBefore: now.Add(-time.Hour).Format(time.RFC3339), NotAfter: now.Add(time.Hour).Format(time.RFC3339),
		KeyIDs: []string{"2026-11"}, Custodians: []string{"court-a"}, Recipient: agency.Public().String()}
	content, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	p7s, err := warrant.Sign(content, []warrant.Signer{{Key: key.(crypto.Signer), Chain: certs}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v := &warrant.Verifier{Trust: store, CustodianID: "court-a", HeldKeyIDs: []string{"2026-11"}}
	if _, err := v.Verify(p7s); err != nil {
		t.Fatalf("a judge certificate issued as the runbook shows: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
