package main

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/smartcard/softhsmtest"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// cli runs the command line in-process and returns stdout and stderr.
func cli(t *testing.T, wantOK bool, args ...string) (string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	if (code == 0) != wantOK {
		t.Fatalf("custodian %s: exit %d, want ok=%v\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantOK, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

func write(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestWarrantLifecycle runs the judge's, the trust admin's and the agency's
// commands end to end on a SoftHSM2 token.
func TestWarrantLifecycle(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	now := time.Now().UTC()
	p := func(name string) string { return filepath.Join(dir, name) }

	// The agency makes its recipient key.
	cli(t, true, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	if fi, err := os.Stat(p("agency.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agency.key mode %v %v", fi.Mode(), err)
	}
	_, stderr := cli(t, false, "agency", "keygen", "--out", p("agency.key"), "--pub", p("other.pub"))
	if !strings.Contains(stderr, "hint:") {
		t.Errorf("no hint for an existing key file: %s", stderr)
	}

	// The court: a root, a CRL, two judges with keys on the token.
	root := trusttest.NewRoot(t, "Test Court Root", now)
	judge := root.Judge(t, "Judge Ada", tok.GenerateKey(t, "EC:prime256v1", "judge-key", "01", true), now)
	clerk := root.Judge(t, "Clerk Grace", tok.GenerateKey(t, "rsa:2048", "clerk-key", "02", false), now)
	write(t, p("root.pem"), trusttest.PEM(root.Cert))
	write(t, p("crl.pem"), trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))))
	write(t, p("judge.pem"), trusttest.PEM(judge))
	write(t, p("clerk.pem"), trusttest.PEM(clerk))

	// An empty trust store verifies nothing; then the admin fills it.
	_, stderr = cli(t, false, "--data-dir", data, "trust", "add-root", p("root.pem"))
	if !strings.Contains(stderr, "court") {
		t.Errorf("add-root without --court: %s", stderr)
	}
	_, stderr = cli(t, false, "--data-dir", data, "trust", "add-root", p("root.pem"), "--court", "Test\u202eCourt")
	if !strings.Contains(stderr, "hint:") {
		t.Errorf("add-root with a bidi court name: %s", stderr)
	}
	cli(t, true, "--data-dir", data, "trust", "add-root", p("root.pem"), "--court", "Test Court")
	impostor := trusttest.NewRoot(t, "Test Court Root", now)
	write(t, p("bad-crl.pem"), trusttest.CRLPEM(impostor.CRL(t, now.Add(-time.Hour), now.Add(time.Hour))))
	cli(t, false, "--data-dir", data, "trust", "set-crl", p("bad-crl.pem"))
	cli(t, true, "--data-dir", data, "trust", "set-crl", p("crl.pem"))
	out, _ := cli(t, true, "--data-dir", data, "--json", "trust", "list")
	var listing trustListing
	if err := json.Unmarshal([]byte(out), &listing); err != nil || len(listing.Roots) != 1 || listing.Roots[0].Court != "Test Court" ||
		len(listing.CRLs) != 1 || listing.Policy.Signers != 1 || len(listing.Policy.EKUs) != 2 {
		t.Fatalf("trust list: %v %s", err, out)
	}

	// The judge writes and signs.
	cli(t, true, "warrant", "new", "--serial", "W-7", "--docket", "CR-1/2026", "--court", "Test Court",
		"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
		"--target", "alice@example.org", "--target", "bob@example.org", "--key-id", "2026-11",
		"--custodian", "cust-1", "--recipient", p("agency.pub"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--out", p("w.json"))
	_, stderr = cli(t, false, "warrant", "sign", "--in", p("w.json"), "--module", softhsmtest.Module,
		"--key", "pkcs11:token=judge;object=judge-key?pin-value="+tok.PIN, "--out", p("w.p7s"))
	if !strings.Contains(stderr, "PIN") {
		t.Errorf("a PIN in the URI was not refused clearly: %s", stderr)
	}
	t.Setenv("CUSTODIAN_PIN", tok.PIN)
	cli(t, true, "warrant", "sign", "--in", p("w.json"), "--module", softhsmtest.Module,
		"--key", "pkcs11:token=judge;object=judge-key", "--cert", p("judge.pem"), "--out", p("w.p7s"))

	// Anyone can show it; the appliance's trust store verifies it.
	out, _ = cli(t, true, "warrant", "show", "--in", p("w.p7s"))
	for _, want := range []string{"W-7", "bob@example.org", "Judge Ada", "NOT VERIFIED"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out, _ = cli(t, true, "--data-dir", data, "warrant", "verify", "--in", p("w.p7s"))
	if !strings.Contains(out, "VERIFIED") {
		t.Errorf("verify output: %s", out)
	}
	cli(t, true, "--data-dir", data, "warrant", "verify", "--in", p("w.p7s"), "--custodian", "cust-1", "--key-id", "2026-11")
	cli(t, true, "warrant", "verify", "--in", p("w.p7s"), "--roots", p("root.pem"), "--court", "Test Court", "--crl", p("crl.pem"))
	_, stderr = cli(t, false, "warrant", "verify", "--in", p("w.p7s"), "--roots", p("root.pem"), "--court", "Other Court", "--crl", p("crl.pem"))
	if !strings.Contains(stderr, "court_mismatch") || !strings.Contains(stderr, "hint: ") {
		t.Errorf("a warrant of another court than its root's: %s", stderr)
	}
	_, stderr = cli(t, false, "--data-dir", data, "warrant", "verify", "--in", p("w.p7s"), "--custodian", "cust-9", "--key-id", "2026-11")
	if !strings.Contains(stderr, "not_addressed") {
		t.Errorf("refusal lacks its reason: %s", stderr)
	}
	os.Mkdir(filepath.Join(dir, "empty"), 0o700) // a data directory without a trust store
	out, _ = cli(t, false, "--data-dir", filepath.Join(dir, "empty"), "--json", "warrant", "verify", "--in", p("w.p7s"))
	if !strings.Contains(out, `"reason": "no_trust_roots"`) {
		t.Errorf("empty trust store: %s", out)
	}

	// Double lock: one signature is not enough, a co-signature is.
	_, stderr = cli(t, false, "--data-dir", data, "trust", "set-policy", "--signers", "2", "--eku=")
	if !strings.Contains(stderr, "extended key usage") {
		t.Errorf("set-policy accepted an empty EKU list: %s", stderr)
	}
	cli(t, true, "--data-dir", data, "trust", "set-policy", "--signers", "2")
	_, stderr = cli(t, false, "--data-dir", data, "warrant", "verify", "--in", p("w.p7s"))
	if !strings.Contains(stderr, "too_few_signers") {
		t.Errorf("double lock with one signer: %s", stderr)
	}
	t.Setenv("CUSTODIAN_PIN", tok.PIN)
	cli(t, true, "warrant", "sign", "--in", p("w.p7s"), "--module", softhsmtest.Module, "--pss",
		"--key", "pkcs11:token=judge;object=clerk-key", "--cert", p("clerk.pem"), "--out", p("w2.p7s"))
	out, _ = cli(t, true, "--data-dir", data, "warrant", "verify", "--in", p("w2.p7s"))
	if !strings.Contains(out, "Clerk Grace") || !strings.Contains(out, "Judge Ada") {
		t.Errorf("co-signed verify output: %s", out)
	}
}

// sealEnvelope writes an envelope for keyID and target to path and returns
// its header.
func sealEnvelope(t *testing.T, path, keyID, target string) *escrow.Envelope {
	t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	env, err := escrow.Seal(&escrow.Public{KeyID: keyID, PublicKey: priv.PublicKey().Bytes()}, target, []byte("intercepted message"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, env)
	h, err := escrow.ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestWarrantNewEnvelopes: --envelope names each envelope and adds its key
// ID and target to those given, in order of first appearance.
func TestWarrantNewEnvelopes(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	cli(t, true, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	a := sealEnvelope(t, p("a.env"), "2026-11", "alice@example.org")
	b := sealEnvelope(t, p("b.env"), "2026-12", "bob@example.org")
	now := time.Now().UTC()
	newWarrant := func(ok bool, out string, args ...string) string {
		args = append([]string{"warrant", "new", "--serial", "W-8", "--docket", "CR-2/2026", "--court", "Test Court",
			"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
			"--custodian", "cust-1", "--recipient", p("agency.pub"),
			"--not-before", now.Format(time.RFC3339), "--not-after", now.Add(24 * time.Hour).Format(time.RFC3339),
			"--out", p(out)}, args...)
		_, stderr := cli(t, ok, args...)
		return stderr
	}

	newWarrant(true, "w.json", "--target", "bob@example.org", "--key-id", "2026-11", "--envelope", p("a.env"), "--envelope", p("b.env"))
	w := readWarrant(t, p("w.json"))
	if got := fmt.Sprint(w.KeyIDs, w.Targets); got != "[2026-11 2026-12] [bob@example.org alice@example.org]" {
		t.Errorf("key IDs and targets: %s", got)
	}
	want := []warrant.EnvelopeRef{a.Ref(), b.Ref()}
	if !reflect.DeepEqual(w.Envelopes, want) {
		t.Errorf("envelopes %+v, want %+v", w.Envelopes, want)
	}

	newWarrant(true, "alone.json", "--envelope", p("a.env"))
	w = readWarrant(t, p("alone.json"))
	if got := fmt.Sprint(w.KeyIDs, w.Targets, len(w.Envelopes)); got != "[2026-11] [alice@example.org] 1" {
		t.Errorf("key IDs, targets and envelopes from --envelope alone: %s", got)
	}

	if stderr := newWarrant(false, "twice.json", "--envelope", p("a.env"), "--envelope", p("b.env"), "--envelope", p("a.env")); !strings.Contains(stderr, p("a.env")+": the same envelope as "+p("a.env")) {
		t.Errorf("an envelope given twice: %s", stderr)
	}
	write(t, p("junk.env"), []byte("not an envelope at all"))
	if stderr := newWarrant(false, "junk.json", "--envelope", p("a.env"), "--envelope", p("junk.env")); !strings.Contains(stderr, p("junk.env")+":") {
		t.Errorf("a bad envelope file is not named: %s", stderr)
	}
	if _, err := os.Stat(p("junk.json")); !os.IsNotExist(err) {
		t.Errorf("wrote a warrant despite a bad envelope: %v", err)
	}
	if stderr := newWarrant(false, "late.json", "--envelope", p("a.env"), "--not-after", "tomorrow"); !strings.Contains(stderr, "hint: times are RFC 3339") {
		t.Errorf("a bad time without its hint: %s", stderr)
	}
}

// TestWarrantNewRefusesRequesterMadeEnvelopes: --envelope refuses an
// envelope made out of another envelope's key without its ephemeral
// scalar (α·R, R + β·G, R relabelled to another target or key ID, R with
// another envelope's proof, the header over another ciphertext), and a
// version 1 envelope, with the hint, and writes no warrant.
func TestWarrantNewRefusesRequesterMadeEnvelopes(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	cli(t, true, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	sealEnvelope(t, p("victim.env"), "2026-11", "alice@example.org")
	sealEnvelope(t, p("own.env"), "2026-12", "bob@example.org")
	victim, _ := os.ReadFile(p("victim.env"))
	own, _ := os.ReadFile(p("own.env"))
	now := time.Now().UTC()
	files := map[string]string{"version 1": p("v1.env")}
	write(t, p("v1.env"), append([]byte("CUSTENV1"), victim[len("CUSTENV2"):]...))
	for i, f := range escrowtest.Forgeries(t, victim, own) {
		files[f.Name] = p(fmt.Sprintf("forged-%d.env", i))
		write(t, files[f.Name], f.Envelope)
	}
	for name, file := range files {
		_, stderr := cli(t, false, "warrant", "new", "--serial", "W-9", "--docket", "CR-2/2026", "--court", "Test Court",
			"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
			"--custodian", "cust-1", "--recipient", p("agency.pub"),
			"--not-before", now.Format(time.RFC3339), "--not-after", now.Add(24*time.Hour).Format(time.RFC3339),
			"--envelope", p("victim.env"), "--envelope", file, "--out", p("w.json"))
		if !strings.Contains(stderr, file+": the envelope does not prove it was sealed honestly") ||
			!strings.Contains(stderr, "hint: scoped mode works only on envelopes that prove") {
			t.Errorf("%s: %s", name, stderr)
		}
		if _, err := os.Stat(p("w.json")); !os.IsNotExist(err) {
			t.Fatalf("%s: a warrant was written", name)
		}
	}
}

func readWarrant(t *testing.T, path string) *warrant.Warrant {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w, err := warrant.Parse(data, 0)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return w
}

// TestSignWithoutCgo: the appliance's static build has no PKCS#11 and says
// so before asking for a PIN.
func TestSignWithoutCgo(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	bin := filepath.Join(t.TempDir(), "custodian")
	build := exec.Command(gobin, "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "warrant", "sign", "--in", "w.json", "--module", "m.so", "--key", "pkcs11:object=k", "--out", "w.p7s")
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cgo") || !strings.Contains(string(out), "hint:") {
		t.Fatalf("want a cgo error with a hint, got %v:\n%s", err, out)
	}
}

// TestSignerRefusalsHaveHints: the refusals of a warrant's signers that
// the court or the trust admin must act on come with advice, from the
// custodian (release) and from warrant verify.
func TestSignerRefusalsHaveHints(t *testing.T) {
	for _, r := range []warrant.Reason{warrant.ReasonCourtMismatch, warrant.ReasonExtKeyUsage, warrant.ReasonMissingPolicy, warrant.ReasonNameConstraints,
		warrant.ReasonDuplicateSigner, warrant.ReasonNoSignerName, warrant.ReasonCRLMissing} {
		if len(hintsOf(releaseHint(&apiError{code: release.Code(r), message: "refused"}))) == 0 {
			t.Errorf("release refusal %s has no hint", r)
		}
		if len(hintsOf(signerHint(&warrant.Error{Reason: r}))) == 0 {
			t.Errorf("verify refusal %s has no hint", r)
		}
	}
}

// TestInvariantWarrantNewRefusesInvisibleText: the judge's own tool names
// the field and the character before anything is signed.
func TestInvariantWarrantNewRefusesInvisibleText(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	cli(t, true, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	now := time.Now().UTC()
	args := func(court string) []string {
		return []string{"warrant", "new", "--serial", "W-9", "--docket", "CR-3/2026", "--court", court,
			"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
			"--target", "alice@example.org", "--key-id", "2026-11", "--custodian", "cust-1", "--recipient", p("agency.pub"),
			"--not-before", now.Format(time.RFC3339), "--not-after", now.Add(time.Hour).Format(time.RFC3339), "--out", p("w.json")}
	}
	_, stderr := cli(t, false, args("District\u3164Court")...)
	if !strings.Contains(stderr, "court: U+3164 HANGUL FILLER is not allowed (invisible)") {
		t.Errorf("stderr: %s", stderr)
	}
	if _, err := os.Stat(p("w.json")); err == nil {
		t.Error("wrote the refused warrant")
	}
	cli(t, true, args("Landgericht Düsseldorf")...)
}

// TestInvariantTrustListShowsRootNamesEscaped: a root whose name carries a
// bidirectional override is listed with the character escaped, so the
// trust admin sees what is there.
func TestInvariantTrustListShowsRootNamesEscaped(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	now := time.Now()
	root := trusttest.NewRoot(t, "Court \u202eRoot", now)
	rootFile := write(t, filepath.Join(dir, "root.pem"), trusttest.PEM(root.Cert))
	out, _ := cli(t, true, "--data-dir", data, "trust", "add-root", rootFile, "--court", "Test Court")
	out2, _ := cli(t, true, "--data-dir", data, "trust", "list")
	for _, o := range []string{out, out2} {
		if strings.ContainsRune(o, '\u202e') || !strings.Contains(o, "<U+202E>") {
			t.Errorf("root name not escaped: %q", o)
		}
	}
}
