package certfile_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tests/need"
)

// TestInvariantDamagedPEMBlockIsRefused: pem.Decode passes over a
// damaged block when a good one follows, so a file whose first
// certificate is damaged (a changed base64 character, an END line of
// another type or with trailing text, a cut-off block with another file
// appended) would read as the certificates after it: trust add-root would
// pin the second, a judge's chain would lose its leaf. Such a file is
// refused, naming the damaged block.
func TestInvariantDamagedPEMBlockIsRefused(t *testing.T) {
	now := time.Now()
	real := trusttest.PEM(trusttest.NewRoot(t, "Real Court Root", now).Cert)
	other := trusttest.PEM(trusttest.NewRoot(t, "Attacker Root", now).Cert)
	lines := strings.Split(string(real), "\n")
	flipped := append([]string{}, lines...)
	flipped[1] = flipped[1][:10] + "*" + flipped[1][11:]
	for name, damaged := range map[string]string{
		"bad base64":        strings.Join(flipped, "\n"),
		"END of other type": strings.Replace(string(real), "-----END CERTIFICATE-----", "-----END X509 CERTIFICATE-----", 1),
		"END trailing text": strings.Replace(string(real), "-----END CERTIFICATE-----", "-----END CERTIFICATE----- x", 1),
		"truncated":         string(real[:len(real)/2]) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			for _, file := range []string{damaged + string(other), "Certificate:\n  text\n" + string(other) + damaged} {
				certs, err := certfile.Certificates([]byte(file))
				if err == nil {
					t.Fatalf("a damaged block was skipped: read %d certificate(s)", len(certs))
				}
				if !strings.Contains(err.Error(), "PEM block") || !strings.Contains(err.Error(), "damaged") {
					t.Errorf("the error does not name the damaged block: %v", err)
				}
			}
		})
	}
}

// TestInvariantDERCertificateIsReadAsDER: a DER certificate may hold any
// bytes in a UTF8String, a whole PEM block of another certificate among
// them; it is read as the DER certificate it is, as openssl x509 -inform
// DER and sha256sum of the file name it.
func TestInvariantDERCertificateIsReadAsDER(t *testing.T) {
	now := time.Now()
	hidden := trusttest.NewRoot(t, "Hidden Root", now).Cert
	outer := trusttest.NewRoot(t, "Outer Root", now, func(c *x509.Certificate) {
		c.Subject.OrganizationalUnit = []string{"\n" + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hidden.Raw}))}
	}).Cert
	certs, err := certfile.Certificates(outer.Raw)
	if err != nil {
		t.Fatalf("a DER certificate refused: %v", err)
	}
	if len(certs) != 1 || !bytes.Equal(certs[0].Raw, outer.Raw) {
		t.Errorf("the DER file was read as %q, not as the certificate it is", certs[0].Subject.CommonName)
	}
}

// nonDERParams rewrites c's signature algorithm (inside and outside the
// signed part, byte-equal as Go requires) to carry a constructed OCTET
// STRING parameter: Go parses it, openssl re-encodes the outer one before
// hashing.
func nonDERParams(t *testing.T, c *x509.Certificate) []byte {
	t.Helper()
	oldAlg := []byte{0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02} // ecdsa-with-SHA256
	newAlg := []byte{0x30, 0x0f, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x24, 0x03, 0x04, 0x01, 0x00}
	in := cryptobyte.String(c.Raw)
	var cert, tbs, alg, sig cryptobyte.String
	if !in.ReadASN1(&cert, asn1.SEQUENCE) || !cert.ReadASN1(&tbs, asn1.SEQUENCE) ||
		!cert.ReadASN1Element(&alg, asn1.SEQUENCE) || !cert.ReadASN1Element(&sig, asn1.BIT_STRING) ||
		!bytes.Equal(alg, oldAlg) || bytes.Count(tbs, oldAlg) != 1 {
		t.Fatal("the test certificate is not ECDSA with SHA-256 as expected")
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(asn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(bytes.Replace(tbs, oldAlg, newAlg, 1)) })
		b.AddBytes(newAlg)
		b.AddBytes(sig)
	})
	return b.BytesOrPanic()
}

// TestInvariantOpenSSLFingerprintIsOpenSSLs: the bracketed "openssl" form
// is shown only where it is what openssl x509 -fingerprint prints. For a
// certificate Go reads but openssl re-encodes before hashing (signature
// algorithm parameters that are not DER), only the SHA-256 of the bytes
// as read is shown, saying that openssl differs.
func TestInvariantOpenSSLFingerprintIsOpenSSLs(t *testing.T) {
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	der := nonDERParams(t, trusttest.NewRoot(t, "Real Court Root", time.Now()).Cert)
	path := filepath.Join(dir, "odd.der")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	certs, err := certfile.Certificates(der)
	if err != nil {
		t.Fatalf("Go no longer reads the certificate; the test needs another: %v", err)
	}
	out := strings.TrimSpace(string(openssl(t, dir, "x509", "-inform", "DER", "-in", path, "-noout", "-fingerprint", "-sha256")))
	_, theirs, _ := strings.Cut(out, "Fingerprint=")
	raw := strings.ToUpper(certfile.Fingerprint(certs[0]))
	if strings.ReplaceAll(theirs, ":", "") == raw {
		t.Fatalf("openssl hashes the bytes as read (%s); the test shows nothing", theirs)
	}
	if got := certfile.OpenSSLFingerprint(certs[0]); got != "" {
		t.Errorf("openssl form %s claimed; openssl prints %s", got, theirs)
	}
	if got := certfile.Fingerprints(certs[0]); strings.Contains(got, "(openssl ") || !strings.Contains(got, certfile.Fingerprint(certs[0])) || !strings.Contains(got, "openssl prints another") {
		t.Errorf("Fingerprints = %s", got)
	}
}

// FuzzBlocks: a file reads as exactly as many blocks as it has lines
// starting "-----BEGIN ", or is refused.
func FuzzBlocks(f *testing.F) {
	root := trusttest.PEM(trusttest.NewRoot(f, "Court Root", time.Now()).Cert)
	f.Add(root)
	f.Add(append(append([]byte("text\n"), root...), root...))
	f.Add(bytes.Replace(root, []byte("-----END CERTIFICATE-----"), []byte("-----END X-----"), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		blocks, err := certfile.Blocks(data)
		if err != nil {
			return
		}
		begins := 0
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "-----BEGIN ") {
				begins++
			}
		}
		if len(blocks) != begins {
			t.Fatalf("%d blocks from %d BEGIN lines", len(blocks), begins)
		}
	})
}
