package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/release/tlstest"
)

// TestInvariantServeRefusesPlainHTTPUnlessAsked: serve starts only with a
// TLS certificate it accepts, or with --insecure-http said out loud; every
// other setup is refused before the daemon touches the TPM, with a hint.
func TestInvariantServeRefusesPlainHTTPUnlessAsked(t *testing.T) {
	dir := t.TempDir()
	pki, err := tlstest.Write(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	copyFile(t, pki.ServerKey, open, 0o644)
	edCert, edKey := ed25519Pair(t, dir, time.Now().Add(time.Hour))
	serve := func(extra ...string) []string {
		return append([]string{"--data-dir", dir, "--tpm", "/nonexistent/tpm0", "serve", "--listen", "127.0.0.1:0", "--button", "sim"}, extra...)
	}
	for name, c := range map[string]struct {
		args []string
		want []string
	}{
		"no TLS":             {serve(), []string{"serve needs TLS", "hint: docs/operator.md", "hint: --insecure-http"}},
		"half TLS":           {serve("--tls-cert", pki.ServerCert), []string{"go together"}},
		"plain and TLS":      {serve("--insecure-http", "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey), []string{"cannot go with"}},
		"plain with officer": {serve("--insecure-http", "--client-ca", pki.OfficerCA), []string{"cannot go with"}},
		"key open to others": {serve("--tls-cert", pki.ServerCert, "--tls-key", open), []string{"open to other users", "hint: chmod 600"}},
		"not its key":        {serve("--tls-cert", pki.ServerCert, "--tls-key", pki.Key), []string{"the TLS certificate", "--tls-key is not the private key of the certificate in --tls-cert"}},
		"officer as server":  {serve("--tls-cert", pki.Cert, "--tls-key", pki.Key), []string{"lacks serverAuth"}},
		"Ed25519 key":        {serve("--tls-cert", edCert, "--tls-key", edKey), []string{"use ECDSA P-256 or P-384, or RSA"}},
		"bad client CA":      {serve("--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--client-ca", pki.Key), []string{"not CERTIFICATE", "hint: --client-ca"}},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := custodian(t, c.args...)
			if code == 0 || strings.Contains(out, "serving on") {
				t.Fatalf("exit %d, stdout %q", code, out)
			}
			for _, want := range c.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q lacks %q", errOut, want)
				}
			}
		})
	}
	// With a good certificate the daemon gets past TLS to the TPM.
	code, _, errOut := custodian(t, serve("--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--client-ca", pki.OfficerCA)...)
	if code == 0 || !strings.Contains(errOut, "/nonexistent/tpm0") {
		t.Fatalf("a good certificate was refused: %d %q", code, errOut)
	}
	code, _, errOut = custodian(t, serve("--insecure-http")...)
	if code == 0 || !strings.Contains(errOut, "/nonexistent/tpm0") {
		t.Fatalf("--insecure-http was refused: %d %q", code, errOut)
	}
}

// TestInvariantClientsRefusePlainHTTPUnlessAsked: release, ledger and
// attest refuse an http:// server without --insecure-http, with a hint,
// before sending anything; client keys open to other users are refused.
func TestInvariantClientsRefusePlainHTTPUnlessAsked(t *testing.T) {
	dir := t.TempDir()
	pki, err := tlstest.Write(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w := writeTemp(t, "not a warrant")
	out := filepath.Join(dir, "r.json")
	open := filepath.Join(dir, "open.key")
	copyFile(t, pki.Key, open, 0o604)
	plain := "http://127.0.0.1:1"
	for name, c := range map[string]struct {
		args []string
		want []string
	}{
		"release":          {[]string{"release", "--server", plain, "--warrant", w, "--out", out}, []string{"refusing plain HTTP to 127.0.0.1:1", "hint: use the https://", "hint: only for a daemon run with --insecure-http"}},
		"ledger":           {[]string{"ledger", "checkpoint", "--server", plain, "--verifier-key", "custodian/x+dbe6e391+ARWOtdxF+nck3DN4mb51uJ7ZFiQqeN0v4yGOt6Qhttqj"}, []string{"refusing plain HTTP"}},
		"attest":           {[]string{"attest", "--server", plain, "--nonce", "0011223344556677", "--out", out}, []string{"refusing plain HTTP"}},
		"officer on plain": {[]string{"release", "--server", plain, "--insecure-http", "--client-cert", pki.Cert, "--client-key", pki.Key, "--warrant", w, "--out", out}, []string{"--client-cert needs an https://"}},
		"half client pair": {[]string{"release", "--server", "https://127.0.0.1:1", "--client-cert", pki.Cert, "--warrant", w, "--out", out}, []string{"go together"}},
		"open client key":  {[]string{"release", "--server", "https://127.0.0.1:1", "--client-cert", pki.Cert, "--client-key", open, "--warrant", w, "--out", out}, []string{"open to other users", "hint: chmod 600"}},
		"unreachable":      {[]string{"release", "--server", "https://127.0.0.1:1", "--ca", pki.ServerCA, "--warrant", w, "--out", out}, []string{"hint: --warrant must be a signed warrant"}},
	} {
		t.Run(name, func(t *testing.T) {
			code, stdout, errOut := custodian(t, c.args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", stdout)
			}
			for _, want := range c.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q lacks %q", errOut, want)
				}
			}
		})
	}
	// Asked for, plain HTTP gets as far as the network, with a warning.
	code, _, errOut := custodian(t, "ledger", "checkpoint", "--server", plain, "--insecure-http", "--verifier-key", "custodian/x+dbe6e391+ARWOtdxF+nck3DN4mb51uJ7ZFiQqeN0v4yGOt6Qhttqj")
	if code == 0 || !strings.Contains(errOut, "warning: plain HTTP") || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("--insecure-http: %d %q", code, errOut)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(to, mode); err != nil {
		t.Fatal(err)
	}
}

// ed25519Pair writes a self-signed server certificate with an Ed25519 key.
func ed25519Pair(t *testing.T, dir string, until time.Time) (string, string) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: until, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, keyFile := filepath.Join(dir, "ed.pem"), filepath.Join(dir, "ed.key")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600)
	return cert, keyFile
}

// TestInvariantURLPasswordsAreRefusedAndNeverShown: no command talks to a
// server named with user:password@ — the custodian's API takes no password
// and a ledger is public — and the refusal neither prints the password nor
// keeps the URL anywhere.
func TestInvariantURLPasswordsAreRefusedAndNeverShown(t *testing.T) {
	dir := t.TempDir()
	_, key, err := note.GenerateKey(rand.Reader, "custodian/court-a")
	if err != nil {
		t.Fatal(err)
	}
	const url = "https://auditor:s3cret@127.0.0.1:1"
	state := filepath.Join(dir, "mon")
	p7s := filepath.Join(dir, "w.p7s")
	if err := os.WriteFile(p7s, []byte("not read: the server is refused first"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"attest", "--server", url, "--nonce", "0011223344556677", "--out", filepath.Join(dir, "a.json")},
		{"release", "--server", url, "--warrant", p7s, "--out", filepath.Join(dir, "r.json")},
		{"ledger", "export", "--server", url, "--verifier-key", key, filepath.Join(dir, "export")},
		{"monitor", "--once", "--appliance", url, "--verifier-key", key, "--state", state},
		{"report", "--ledger", url + "/log/", "--verifier-key", key, "--out", filepath.Join(dir, "report")},
	} {
		code, out, errOut := custodian(t, args...)
		if code == 0 || !strings.Contains(errOut, "user or password") || strings.Contains(out+errOut, "s3cret") {
			t.Errorf("%s: exit %d\n%s%s", args[0], code, out, errOut)
		}
	}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if data, _ := os.ReadFile(path); strings.Contains(string(data), "s3cret") {
				t.Errorf("%s keeps the password", path)
			}
		}
		return nil
	})
}
