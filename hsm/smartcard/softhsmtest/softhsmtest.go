// Package softhsmtest makes SoftHSM2 tokens for tests: a judge's smartcard in
// the test's temporary directory, with keys generated on the token by
// OpenSC's pkcs11-tool so the private key never exists outside it.
package softhsmtest

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/custodian-project/custodian/hsm/smartcard"
	"github.com/custodian-project/custodian/tests/need"
)

// Module is SoftHSM2's PKCS#11 module on Debian.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token is an initialized SoftHSM2 token.
type Token struct {
	Dir   string
	Label string
	PIN   string
}

// New initializes a token labelled label and points SOFTHSM2_CONF at its
// configuration. It skips the test when SoftHSM2 or OpenSC is missing, or
// in a build without cgo.
func New(t *testing.T, label string) *Token {
	t.Helper()
	if err := smartcard.Supported(); err != nil {
		need.Missing(t, "%v", err)
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			need.Missing(t, "%s not installed (Debian softhsm2, opensc): %v", tool, err)
		}
	}
	if _, err := os.Stat(Module); err != nil {
		need.Missing(t, "SoftHSM2 module missing: %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	tok := &Token{Dir: dir, Label: label, PIN: "246810"}
	tok.run(t, "softhsm2-util", "--init-token", "--free", "--label", label, "--pin", tok.PIN, "--so-pin", "13579")
	return tok
}

func (tok *Token) run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// GenerateKey makes a key pair on the token and returns its public key.
// keyType is pkcs11-tool's: EC:prime256v1, EC:secp384r1, rsa:2048.
// alwaysAuth marks the key CKA_ALWAYS_AUTHENTICATE, as PIV slot 9c is.
func (tok *Token) GenerateKey(t *testing.T, keyType, label, id string, alwaysAuth bool) crypto.PublicKey {
	t.Helper()
	args := []string{"--module", Module, "--token-label", tok.Label, "--login", "--pin", tok.PIN,
		"--keypairgen", "--key-type", keyType, "--id", id, "--label", label}
	if alwaysAuth {
		args = append(args, "--always-auth")
	}
	tok.run(t, "pkcs11-tool", args...)
	out := filepath.Join(tok.Dir, label+".pub.der")
	tok.run(t, "pkcs11-tool", "--module", Module, "--token-label", tok.Label, "--read-object", "--type", "pubkey", "--id", id, "-o", out)
	der, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// WriteCertificate stores cert on the token under id, beside its key.
func (tok *Token) WriteCertificate(t *testing.T, cert *x509.Certificate, label, id string) {
	t.Helper()
	path := filepath.Join(tok.Dir, label+".crt.der")
	if err := os.WriteFile(path, cert.Raw, 0o600); err != nil {
		t.Fatal(err)
	}
	tok.run(t, "pkcs11-tool", "--module", Module, "--token-label", tok.Label, "--login", "--pin", tok.PIN,
		"--write-object", path, "--type", "cert", "--id", id, "--label", label)
}

// ImportKey puts a key made outside the token on it. Tests use it where
// pkcs11-tool cannot read back a generated public key (OpenSC 0.23 fails on
// P-384 with "cannot create EVP_PKEY").
func (tok *Token) ImportKey(t *testing.T, key crypto.Signer, label, id string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tok.Dir, label+".key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	tok.run(t, "softhsm2-util", "--import", path, "--token", tok.Label, "--label", label, "--id", id, "--pin", tok.PIN)
}
