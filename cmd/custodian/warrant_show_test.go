package main

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/recipient"
)

// TestWarrantShowRendersUnsignedAndSigned: the judge reads the warrant
// before signing it. warrant new prints the summary it wrote; warrant show
// prints the same summary of w.json and, with the signer added, of w.p7s;
// the recipient is a fingerprint unless the full key is asked for; the
// signer's issuer is labelled; a file that is neither kind of warrant gets
// an error saying so.
func TestWarrantShowRendersUnsignedAndSigned(t *testing.T) {
	k := newOpenSSLPKI(t)
	p := func(name string) string { return filepath.Join(k.dir, name) }
	now := time.Now().UTC()
	keygen, _ := cli(t, true, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	pub, err := recipient.ParsePublicKey(string(mustRead(t, p("agency.pub"))))
	if err != nil {
		t.Fatal(err)
	}
	rows := pub.FingerprintRows()
	if !strings.Contains(keygen, "\nfingerprint "+rows[0]+"\n            "+rows[1]+"\n") {
		t.Errorf("agency keygen does not print the fingerprint the judge compares:\n%s", keygen)
	}
	wrote, _ := cli(t, true, "warrant", "new", "--serial", "W-12", "--docket", "CR-5/2026", "--court", opensslCourt,
		"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
		"--target", "alice@example.org", "--key-id", "2026-11", "--custodian", "court-a", "--recipient", p("agency.pub"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--out", p("w.json"))
	_, summary, ok := strings.Cut(wrote, "wrote "+p("w.json")+":\n\n")
	summary, _, ok2 := strings.Cut(summary, "\nRead it")
	if !ok || !ok2 {
		t.Fatalf("warrant new printed no summary:\n%s", wrote)
	}
	fingerprint := "Recipient:  mlkem768x25519 key\n            fingerprint " + rows[0] + "\n                        " + rows[1] + "\n"
	for _, want := range []string{"Warrant:    W-12\n", "Court:      " + opensslCourt + "\n", "Target:     alice@example.org\n", fingerprint} {
		if !strings.Contains(summary, want) {
			t.Errorf("warrant new's summary lacks %q:\n%s", want, summary)
		}
	}

	// w.json reads line by line; only the recipient's line is long.
	doc := string(mustRead(t, p("w.json")))
	if lines := strings.Split(strings.TrimSuffix(doc, "\n"), "\n"); len(lines) < 14 {
		t.Errorf("w.json has %d lines:\n%s", len(lines), doc)
	}

	unsigned, _ := cli(t, true, "warrant", "show", p("w.json"))
	if !strings.HasPrefix(unsigned, summary) || !strings.Contains(unsigned, "NOT SIGNED") {
		t.Errorf("warrant show w.json is not warrant new's summary, marked unsigned:\n%s\nwant first:\n%s", unsigned, summary)
	}
	if strings.Contains(unsigned, pub.String()) {
		t.Error("warrant show prints the full recipient key unasked")
	}
	if full, _ := cli(t, true, "warrant", "show", p("w.json"), "--recipient-key"); !strings.Contains(full, pub.String()+"\n") {
		t.Errorf("--recipient-key does not print the key:\n%s", full)
	}
	if js, _ := cli(t, true, "--json", "warrant", "show", p("w.json")); !strings.Contains(js, `"signed": false`) || !strings.Contains(js, pub.Fingerprint()) {
		t.Errorf("warrant show --json of w.json:\n%s", js)
	}

	k.sign(t, mustRead(t, p("w.json")), p("w.p7s"))
	signedBy := "Signed by:  Test judge (issued by CN=District Court Root) at "
	for _, args := range [][]string{{"warrant", "show", p("w.p7s")}, {"warrant", "show", "--in", p("w.p7s")}} {
		signed, _ := cli(t, true, args...)
		if !strings.HasPrefix(signed, summary) || !strings.Contains(signed, signedBy) || !strings.Contains(signed, "NOT VERIFIED") || strings.Contains(signed, "NOT SIGNED") {
			t.Errorf("%s:\n%s", strings.Join(args, " "), signed)
		}
	}
	verified, _ := cli(t, true, "warrant", "verify", "--in", p("w.p7s"), "--roots", k.RootText, "--court", opensslCourt, "--crl", k.CRLText)
	if !strings.Contains(verified, signedBy) {
		t.Errorf("warrant verify does not label the issuer:\n%s", verified)
	}

	// Files that are neither kind of warrant.
	p7s := mustRead(t, p("w.p7s"))
	for name, c := range map[string]struct {
		data string
		want []string
	}{
		"text":             {"hello\n", []string{"neither a warrant document (JSON) nor a signed warrant (CMS)", "hint: give the w.json"}},
		"empty":            {"", []string{"neither a warrant document"}},
		"certificate":      {string(mustRead(t, k.Judge)), []string{"is a PEM file (a certificate or a key?), not a warrant", "hint: give the w.json"}},
		"PEM signed":       {string(pem.EncodeToMemory(&pem.Block{Type: "CMS", Bytes: p7s})), []string{"is a signed warrant in PEM", "hint: convert it: openssl cms -cmsout"}},
		"other JSON":       {`{"version":2}` + "\n", []string{"cannot read the warrant document (bad_version)", "hint: write the warrant with custodian warrant new"}},
		"truncated signed": {string(p7s[:len(p7s)/2]), []string{"cannot read the signed warrant ("}},
	} {
		t.Run(name, func(t *testing.T) {
			f := write(t, p(strings.ReplaceAll(name, " ", "-")), []byte(c.data))
			out, stderr := cli(t, false, "warrant", "show", f)
			if out != "" {
				t.Errorf("printed %q", out)
			}
			for _, want := range c.want {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			for _, raw := range []string{"x509:", "asn1:", "json:", "*warrant"} {
				if strings.Contains(stderr, raw) {
					t.Errorf("decoder text %q in:\n%s", raw, stderr)
				}
			}
		})
	}
	if _, err := os.Stat(p("w.p7s")); err != nil {
		t.Fatal(err)
	}
}
