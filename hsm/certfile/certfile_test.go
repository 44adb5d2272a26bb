package certfile_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tests/need"
)

// openssl runs openssl in dir and returns its standard output.
func openssl(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestFingerprintsMatchOpenSSL: the openssl form of a fingerprint is
// what openssl x509 -fingerprint -sha256 prints, and the project's form
// is the same digest in lower-case hex.
func TestFingerprintsMatchOpenSSL(t *testing.T) {
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	for _, c := range []*trusttest.CA{trusttest.NewRoot(t, "District Court Root", time.Now()), trusttest.NewRoot(t, "Other Root", time.Now())} {
		path := filepath.Join(dir, "c.pem")
		if err := os.WriteFile(path, trusttest.PEM(c.Cert), 0o600); err != nil {
			t.Fatal(err)
		}
		out := strings.TrimSpace(string(openssl(t, dir, "x509", "-in", path, "-noout", "-fingerprint", "-sha256")))
		_, theirs, ok := strings.Cut(out, "Fingerprint=")
		if !ok {
			t.Fatalf("openssl printed %q", out)
		}
		if got := certfile.OpenSSLFingerprint(c.Cert); got != theirs {
			t.Errorf("openssl form %s, openssl prints %s", got, theirs)
		}
		if got := certfile.Fingerprint(c.Cert); got != strings.ToLower(strings.ReplaceAll(theirs, ":", "")) {
			t.Errorf("project form %s is not openssl's digest %s", got, theirs)
		}
		want := "sha256 " + certfile.Fingerprint(c.Cert) + " (openssl " + theirs + ")"
		if got := certfile.Fingerprints(c.Cert); got != want {
			t.Errorf("Fingerprints = %s, want %s", got, want)
		}
		if got := certfile.FingerprintLine(certfile.Fingerprint(c.Cert), certfile.OpenSSLFingerprint(c.Cert)); got != want {
			t.Errorf("FingerprintLine = %s, want %s", got, want)
		}
	}
}

// TestPEMWithExplanatoryTextAccepted: certificates and chains as openssl
// x509 -text writes them (text before each block, RFC 7468 section 5.2)
// read like plain PEM and like DER.
func TestPEMWithExplanatoryTextAccepted(t *testing.T) {
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	now := time.Now()
	root := trusttest.NewRoot(t, "Court Root", now)
	inter := root.Intermediate(t, "Judges CA", now)
	var chain []byte
	for i, c := range []*trusttest.CA{inter, root} {
		path := filepath.Join(dir, "c.pem")
		if err := os.WriteFile(path, trusttest.PEM(c.Cert), 0o600); err != nil {
			t.Fatal(err)
		}
		text := openssl(t, dir, "x509", "-in", path, "-text")
		if text[0] == '-' {
			t.Fatalf("certificate %d: openssl x509 -text wrote no text before the block", i)
		}
		chain = append(chain, text...)
	}
	for name, data := range map[string][]byte{"text before each block": chain, "plain PEM": certfile.PEM(inter.Cert, root.Cert)} {
		certs, err := certfile.Certificates(data)
		if err != nil || len(certs) != 2 || !certs[0].Equal(inter.Cert) || !certs[1].Equal(root.Cert) {
			t.Errorf("%s: %v (%d certificates)", name, err, len(certs))
		}
	}
	if certs, err := certfile.Certificates(root.Cert.Raw); err != nil || len(certs) != 1 || !certs[0].Equal(root.Cert) {
		t.Errorf("DER: %v", err)
	}
	want := x509.NewCertPool()
	want.AddCert(inter.Cert)
	want.AddCert(root.Cert)
	if pool, err := certfile.Pool(chain); err != nil || !pool.Equal(want) {
		t.Errorf("pool of a chain with text: %v", err)
	}
}

// TestCertificateFileErrorsNameTheCause: a file that is not certificates
// gets an error in words, naming the block at fault, with no decoder text.
func TestCertificateFileErrorsNameTheCause(t *testing.T) {
	root := trusttest.NewRoot(t, "Court Root", time.Now())
	good := trusttest.PEM(root.Cert)
	damaged := bytes.Replace(good, []byte("-----END CERTIFICATE-----"), nil, 1)
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	notDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 3, 1, 2, 3}})
	for name, c := range map[string]struct {
		data []byte
		want string
	}{
		"empty":                 {nil, "neither PEM"},
		"text only":             {[]byte("Certificate:\n    Data: nothing\n"), "neither PEM"},
		"damaged block":         {append([]byte("Certificate:\n"), damaged...), "PEM block 1 is damaged"},
		"a private key":         {append(bytes.Clone(good), key...), `PEM block 2 is "PRIVATE KEY", not CERTIFICATE`},
		"block that is not DER": {append(bytes.Clone(good), notDER...), "PEM block 2: not a valid X.509 certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := certfile.Certificates(c.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			for _, raw := range []string{"x509:", "asn1:", "pem:"} {
				if strings.Contains(err.Error(), raw) {
					t.Errorf("decoder text %q in %q", raw, err)
				}
			}
		})
	}
}

// FuzzCertificates: any input is read or refused with an error in words;
// whatever is read re-encodes to the same certificates.
func FuzzCertificates(f *testing.F) {
	root := trusttest.NewRoot(f, "Court Root", time.Now())
	f.Add(trusttest.PEM(root.Cert))
	f.Add(append([]byte("Certificate:\n    Data:\n"), trusttest.PEM(root.Cert)...))
	f.Add(root.Cert.Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := certfile.Certificates(data)
		if err != nil {
			if strings.Contains(err.Error(), "x509:") || strings.Contains(err.Error(), "asn1:") {
				t.Fatalf("decoder text in %q", err)
			}
			return
		}
		again, err := certfile.Certificates(certfile.PEM(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-read: %v", err)
		}
		for i := range certs {
			if !again[i].Equal(certs[i]) {
				t.Fatalf("certificate %d changed", i)
			}
		}
	})
}
