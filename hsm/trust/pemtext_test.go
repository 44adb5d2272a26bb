package trust_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tests/need"
)

// openssl's -text output, like openssl ca's default, puts explanatory
// text before the PEM block (RFC 7468 section 5.2). Such files are what
// court CAs hand out; they are read like plain PEM.
func TestPEMWithExplanatoryTextAccepted(t *testing.T) {
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	root := trusttest.NewRoot(t, "Court Root", now)
	withText := func(kind string, pem []byte) []byte {
		in := filepath.Join(dir, kind+".pem")
		if err := os.WriteFile(in, pem, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("openssl", kind, "-in", in, "-text").Output()
		if err != nil {
			t.Fatalf("openssl %s -text: %v", kind, err)
		}
		if out[0] == '-' {
			t.Fatalf("openssl %s -text wrote no text before the block", kind)
		}
		return out
	}

	certs, err := certfile.Certificates(withText("x509", trusttest.PEM(root.Cert)))
	if err != nil || len(certs) != 1 || !certs[0].Equal(root.Cert) {
		t.Fatalf("certificate with text: %v (%d certificates)", err, len(certs))
	}
	s, err := trust.Open(filepath.Join(dir, "trust"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRoot(withText("x509", trusttest.PEM(root.Cert)), "Court"); err != nil {
		t.Fatalf("add-root with text: %v", err)
	}
	crl := trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)))
	if _, err := s.SetCRL(withText("crl", crl), now); err != nil {
		t.Fatalf("CRL with text: %v", err)
	}
}
