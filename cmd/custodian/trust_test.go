package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// TestInvariantTrustCommandsWorkBesideAnUnusableCRL: the CRL of an issuing
// CA two levels below a court's root, set with its chain as the runbook
// says, stays in force; a stored CRL that no longer verifies is listed as
// such with a hint, the other commands keep working, and set-crl replaces
// it.
func TestInvariantTrustCommandsWorkBesideAnUnusableCRL(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now()
	a := trusttest.NewRoot(t, "Court A Root", now)
	b := trusttest.NewRoot(t, "Court B Root", now)
	policyCA := a.Intermediate(t, "Court A Policy CA", now)
	issuing := policyCA.Intermediate(t, "Court A Issuing CA", now)
	cli(t, true, "--data-dir", data, "trust", "add-root", write(t, p("a.pem"), trusttest.PEM(a.Cert)), "--court", "Court A")
	cli(t, true, "--data-dir", data, "trust", "add-root", write(t, p("b.pem"), trusttest.PEM(b.Cert)), "--court", "Court B")
	cli(t, true, "--data-dir", data, "trust", "set-crl", write(t, p("b.crl.pem"), trusttest.CRLPEM(b.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)))))
	withChain := func(crl []byte) []byte {
		return append(append(trusttest.CRLPEM(crl), trusttest.PEM(issuing.Cert)...), trusttest.PEM(policyCA.Cert)...)
	}
	cli(t, true, "--data-dir", data, "trust", "set-crl", write(t, p("issuing.crl.pem"), withChain(issuing.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)))))
	listing := func() (trustListing, string) {
		out, _ := cli(t, true, "--data-dir", data, "--json", "trust", "list")
		var l trustListing
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatal(err)
		}
		_, stderr := cli(t, true, "--data-dir", data, "trust", "list")
		return l, stderr
	}
	if l, _ := listing(); len(l.CRLs) != 2 || l.CRLs[0].Unusable != "" || l.CRLs[1].Unusable != "" {
		t.Fatalf("CRLs after set-crl: %+v", l.CRLs)
	}

	// The stored file loses the policy CA, as an older version stored it.
	path := filepath.Join(data, "trust", "crls", trust.IssuerID(issuing.Cert)+".pem")
	write(t, path, append(trusttest.CRLPEM(issuing.CRL(t, now.Add(-time.Hour), now.Add(time.Hour))), trusttest.PEM(issuing.Cert)...))
	l, stderr := listing()
	if len(l.CRLs) != 2 || !strings.Contains(stderr, "hint: ") || !strings.Contains(stderr, "custodian trust set-crl FILE") {
		t.Fatalf("an unusable CRL is not listed with a hint: %+v\n%s", l.CRLs, stderr)
	}
	var unusable int
	for _, c := range l.CRLs {
		if c.Unusable != "" {
			unusable++
			if !strings.Contains(c.Issuer, "Court A Issuing CA") {
				t.Errorf("unusable CRL listed as %q", c.Issuer)
			}
		}
	}
	if unusable != 1 {
		t.Fatalf("%d unusable CRLs listed, want 1: %+v", unusable, l.CRLs)
	}
	out, _ := cli(t, true, "--data-dir", data, "trust", "list")
	if !strings.Contains(out, "DOES NOT VERIFY") {
		t.Errorf("trust list: %s", out)
	}
	cli(t, true, "--data-dir", data, "trust", "set-policy", "--signers", "1")
	cli(t, true, "--data-dir", data, "trust", "set-crl", write(t, p("issuing2.crl.pem"), withChain(issuing.CRL(t, now, now.Add(time.Hour)))))
	if l, stderr := listing(); len(l.CRLs) != 2 || l.CRLs[0].Unusable != "" || l.CRLs[1].Unusable != "" || strings.Contains(stderr, "hint:") {
		t.Fatalf("set-crl did not replace the unusable CRL: %+v %s", l.CRLs, stderr)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}
