package smartcard_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/custodian-project/custodian/hsm/smartcard"
	"github.com/custodian-project/custodian/hsm/smartcard/softhsmtest"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tests/need"
	"github.com/github/smimesign/ietf-cms/protocol"
)

// pkcs11Engines are where Debian's libengine-pkcs11-openssl puts the engine.
var pkcs11Engines = []string{
	"/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
	"/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so",
}

// opensslWithEngine writes an openssl configuration that loads the PKCS#11
// engine on SoftHSM2, and skips when openssl or the engine is missing.
func opensslWithEngine(t *testing.T, dir string) []string {
	t.Helper()
	need.Command(t, "openssl", "openssl")
	engine := ""
	for _, e := range pkcs11Engines {
		if _, err := os.Stat(e); err == nil {
			engine = e
		}
	}
	if engine == "" {
		need.Missing(t, "openssl PKCS#11 engine not installed (Debian libengine-pkcs11-openssl)")
	}
	conf := writeFile(t, dir, "openssl.cnf", []byte(`openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = `+engine+`
MODULE_PATH = `+softhsmtest.Module+`
`))
	return append(os.Environ(), "OPENSSL_CONF="+conf)
}

func openssl(t *testing.T, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return out
}

// TestOpenSSLSignsOnToken: a judge signs with openssl cms and the pkcs11
// engine, the key on the SoftHSM token; our verifier accepts the result.
func TestOpenSSLSignsOnToken(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	dir := t.TempDir()
	env := opensslWithEngine(t, dir)
	c := newCourt(t)
	cases := []struct {
		name, keyType string
		extra         []string
		refused       warrant.Reason
	}{
		{"ecdsa p-256", "EC:prime256v1", nil, ""},
		{"rsa pkcs1", "rsa:2048", nil, ""},
		{"rsa pss", "rsa:2048", []string{"-keyopt", "rsa_padding_mode:pss"}, ""},
		// Signer named by subject key identifier: SignerInfo version 3.
		{"ecdsa keyid", "EC:prime256v1", []string{"-keyid"}, ""},
		{"ecdsa p-384 sha-384", "EC:secp384r1", []string{"-md", "sha384"}, ""},
		// Streaming writes BER with indefinite lengths: refused, with advice.
		{"streamed ber", "EC:prime256v1", []string{"-stream"}, warrant.ReasonNotDER},
		{"sha-1", "EC:prime256v1", []string{"-md", "sha1"}, warrant.ReasonBadAlgorithm},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			label, id := fmt.Sprintf("osslkey%d", i), fmt.Sprintf("%02x", 0x40+i)
			cert := tokenJudge(t, tok, c, tc.keyType, label, id, false)
			in := writeFile(t, dir, label+".json", testWarrant(t))
			signer := writeFile(t, dir, label+".pem", trusttest.PEM(cert))
			out := filepath.Join(dir, label+".p7s")
			args := []string{"cms", "-sign", "-binary", "-nodetach", "-outform", "DER", "-md", "sha256",
				"-engine", "pkcs11", "-keyform", "engine",
				"-inkey", "pkcs11:token=judge;object=" + label + ";type=private;pin-value=" + tok.PIN,
				"-signer", signer, "-in", in, "-out", out}
			openssl(t, env, append(args, tc.extra...)...)
			p7s, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if tc.refused != "" {
				v := &warrant.Verifier{Trust: c.store, CustodianID: "cust-1", HeldKeyIDs: []string{"2026-11"}}
				if _, err := v.Verify(p7s); warrant.ReasonOf(err) != tc.refused {
					t.Fatalf("got %v, want reason %s", err, tc.refused)
				}
				return
			}
			c.verify(t, p7s)
			if tc.name == "ecdsa keyid" && signerInfoVersion(t, p7s) != 3 {
				t.Fatal("openssl -keyid did not name the signer by subject key identifier")
			}
		})
	}
}

func signerInfoVersion(t *testing.T, p7s []byte) int {
	t.Helper()
	ci, err1 := protocol.ParseContentInfo(p7s)
	sd, err2 := ci.SignedDataContent()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return sd.SignerInfos[0].Version
}

// TestOpenSSLVerifiesOurs: warrants we sign on the token, with a
// documentSigning certificate, pass openssl cms -verify with the court root
// and its CRL.
func TestOpenSSLVerifiesOurs(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	dir := t.TempDir()
	env := opensslWithEngine(t, dir)
	c := newCourt(t)
	ec := tokenJudge(t, tok, c, "EC:prime256v1", "ec", "21", true)
	p384 := tokenJudge(t, tok, c, "EC:secp384r1", "p384", "22", false)
	rsaCert := tokenJudge(t, tok, c, "rsa:2048", "rsa", "23", false)
	open := func(label string, cert *x509.Certificate) *smartcard.Key {
		uri, _ := smartcard.ParseURI("pkcs11:token=judge;object=" + label)
		k, err := smartcard.Open(softhsmtest.Module, uri, tok.PIN, cert)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	type signer struct {
		label string
		cert  *x509.Certificate
		pss   bool
	}
	cases := map[string][]signer{
		"ecdsa p-256": {{"ec", ec, false}},
		"ecdsa p-384": {{"p384", p384, false}},
		"rsa pkcs1":   {{"rsa", rsaCert, false}},
		"rsa pss":     {{"rsa", rsaCert, true}},
		"two signers": {{"ec", ec, false}, {"rsa", rsaCert, true}},
	}
	// openssl cms takes CRLs from the trust file.
	trustFile := writeFile(t, dir, "trust.pem", append(trusttest.PEM(c.root.Cert), trusttest.CRLPEM(c.crl)...))
	for name, signers := range cases {
		t.Run(name, func(t *testing.T) {
			content := testWarrant(t)
			var p7s []byte
			// One card at a time, as judges sign: the second co-signs.
			for _, s := range signers {
				key := open(s.label, s.cert)
				ws := []warrant.Signer{{Key: key, Chain: []*x509.Certificate{s.cert}, PSS: s.pss}}
				var err error
				if p7s == nil {
					p7s, err = warrant.Sign(content, ws, now)
				} else {
					p7s, err = warrant.CoSign(p7s, ws, now)
				}
				key.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			in := writeFile(t, t.TempDir(), "w.p7s", p7s)
			out := filepath.Join(t.TempDir(), "w.json")
			// The judges' certificates are for documentSigning (RFC 9336),
			// which openssl's default S/MIME purpose check does not know.
			openssl(t, env, "cms", "-verify", "-binary", "-inform", "DER", "-in", in,
				"-CAfile", trustFile, "-crl_check", "-purpose", "any", "-out", out)
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("openssl returned other content: %v", err)
			}
			c.verify(t, p7s)
		})
	}
}
