package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/smartcard"
	"github.com/custodian-project/custodian/hsm/smartcard/softhsmtest"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// newWarrantFile writes w.json with warrant new in dir and returns its path.
func newWarrantFile(t *testing.T, dir string) string {
	t.Helper()
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()
	cli(t, true, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	cli(t, true, "warrant", "new", "--serial", "W-11", "--docket", "CR-5/2026", "--court", "Test Court",
		"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
		"--target", "alice@example.org", "--key-id", "2026-11", "--key-id", "2026-12", "--custodian", "cust-1",
		"--recipient", p("agency.pub"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--out", p("w.json"))
	return p("w.json")
}

// TestInvariantWarrantSignShowsWhatItSigns: before it asks for the PIN,
// warrant sign prints the summary the appliance will display, for a new
// warrant and for a co-signature (then with the first signer).
func TestInvariantWarrantSignShowsWhatItSigns(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()
	root := trusttest.NewRoot(t, "Test Court Root", now)
	write(t, p("judge.pem"), trusttest.PEM(root.Judge(t, "Judge Ada", tok.GenerateKey(t, "EC:prime256v1", "judge-key", "01", false), now)))
	write(t, p("clerk.pem"), trusttest.PEM(root.Judge(t, "Clerk Grace", tok.GenerateKey(t, "EC:prime256v1", "clerk-key", "02", false), now)))
	in := newWarrantFile(t, dir)

	t.Setenv("CUSTODIAN_PIN", tok.PIN)
	_, stderr := cli(t, true, "warrant", "sign", "--in", in, "--module", softhsmtest.Module,
		"--key", "pkcs11:token=judge;object=judge-key", "--cert", p("judge.pem"), "--out", p("w.p7s"))
	for _, want := range []string{"Warrant:    W-11\n", "Court:      Test Court\n", "Target:     alice@example.org\n",
		"Key IDs:    2026-11, 2026-12\n", "Custodians: cust-1\n", "Recipient:  mlkem768x25519 key\n            fingerprint "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("warrant sign did not show %q:\n%s", want, stderr)
		}
	}
	t.Setenv("CUSTODIAN_PIN", tok.PIN)
	_, stderr = cli(t, true, "warrant", "sign", "--in", p("w.p7s"), "--module", softhsmtest.Module,
		"--key", "pkcs11:token=judge;object=clerk-key", "--cert", p("clerk.pem"), "--out", p("w2.p7s"))
	if !strings.Contains(stderr, "Warrant:    W-11\n") || !strings.Contains(stderr, "Signed by:  Judge Ada (issued by ") {
		t.Errorf("co-signing did not show the warrant and its first signer:\n%s", stderr)
	}
}

// TestInvariantWarrantSignSignsOnlyWhatWarrantNewWrites: a w.json whose
// bytes are not exactly those warrant new writes is refused before the
// PIN is asked for: a carriage return in JSON white space can hide a key
// ID from cat, and re-indented or reordered JSON is not what was read.
func TestInvariantWarrantSignSignsOnlyWhatWarrantNewWrites(t *testing.T) {
	if smartcard.Supported() != nil {
		t.Skip("warrant sign needs a cgo build")
	}
	dir := t.TempDir()
	in := newWarrantFile(t, dir)
	canonical, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, canonical, "", "    "); err != nil {
		t.Fatal(err)
	}
	// On a terminal the CR returns to the line's start and "2026-11"
	// overwrites "2026-12": cat shows one key ID, the signature covers two.
	hidden := strings.Replace(string(canonical), `"key_ids": ["2026-11","2026-12"]`, "\"key_ids\": [\"2026-12\",\r\"2026-11\"]", 1)
	if hidden == string(canonical) {
		t.Fatalf("test warrant has other key IDs: %s", canonical)
	}
	for name, doc := range map[string]string{
		"carriage return in white space": hidden,
		"re-indented":                    indented.String() + "\n",
		"no final newline":               strings.TrimSuffix(string(canonical), "\n"),
		"trailing white space":           string(canonical) + " ",
		"escaped letter":                 strings.Replace(string(canonical), `"fraud"`, `"fr\u0061ud"`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("CUSTODIAN_PIN", "") // reaching the PIN would fail otherwise
			f := write(t, filepath.Join(dir, "edited.json"), []byte(doc))
			_, stderr := cli(t, false, "warrant", "sign", "--in", f, "--module", softhsmtest.Module,
				"--key", "pkcs11:token=judge;object=judge-key", "--out", filepath.Join(dir, "edited.p7s"))
			if !strings.Contains(stderr, "not exactly as custodian warrant new writes it") || !strings.Contains(stderr, "hint: ") {
				t.Errorf("stderr: %s", stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "edited.p7s")); err == nil {
				t.Error("wrote a signed warrant")
			}
		})
	}
}

// TestWarrantSignTakesTheOneLineFormOfEarlierVersions: a w.json written
// by an earlier warrant new (compact, one line) is still signed: it gets
// past the check of its bytes to the PIN.
func TestWarrantSignTakesTheOneLineFormOfEarlierVersions(t *testing.T) {
	if smartcard.Supported() != nil {
		t.Skip("warrant sign needs a cgo build")
	}
	dir := t.TempDir()
	in := newWarrantFile(t, dir)
	var compact bytes.Buffer
	if err := json.Compact(&compact, mustRead(t, in)); err != nil {
		t.Fatal(err)
	}
	f := write(t, filepath.Join(dir, "one-line.json"), append(compact.Bytes(), '\n'))
	t.Setenv("CUSTODIAN_PIN", "")
	_, stderr := cli(t, false, "warrant", "sign", "--in", f, "--module", softhsmtest.Module,
		"--key", "pkcs11:token=judge;object=judge-key", "--out", filepath.Join(dir, "w.p7s"))
	if strings.Contains(stderr, "not exactly as custodian warrant new writes it") || !strings.Contains(stderr, "You are signing this warrant") {
		t.Errorf("the one-line form was refused before the PIN:\n%s", stderr)
	}
}
