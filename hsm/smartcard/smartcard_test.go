package smartcard_test

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/smartcard"
	"github.com/custodian-project/custodian/hsm/smartcard/softhsmtest"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

func TestParseURI(t *testing.T) {
	u, err := smartcard.ParseURI("pkcs11:token=judge%20card;object=judge-key;id=%01;type=private")
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != "judge card" || u.Object != "judge-key" || string(u.ID) != "\x01" {
		t.Fatalf("parsed %+v", u)
	}
	for _, bad := range []string{
		"judge-key",
		"pkcs11:token=judge",
		"pkcs11:object=k?pin-value=1234",
		"pkcs11:object=k;pin-value=1234",
		"pkcs11:object=k?module-path=/tmp/evil.so",
		"pkcs11:object=k;type=public",
		"pkcs11:object=k;object=j",
		"pkcs11:object=k;colour=blue",
		"pkcs11:object=%zz",
		"pkcs11:object",
	} {
		if _, err := smartcard.ParseURI(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

var now = time.Now().UTC().Truncate(time.Second)

// court is a test court PKI and a trust store that pins it.
type court struct {
	root  *trusttest.CA
	crl   []byte
	store *trust.Store
}

func newCourt(t *testing.T) *court {
	c := &court{root: trusttest.NewRoot(t, "Test Court Root", now), store: trust.New()}
	c.crl = c.root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	if _, err := c.store.AddRoot(trusttest.PEM(c.root.Cert), "Test Court"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.store.SetCRL(c.crl, now); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *court) verify(t *testing.T, p7s []byte) *warrant.Verified {
	t.Helper()
	v := &warrant.Verifier{Trust: c.store, CustodianID: "cust-1", HeldKeyIDs: []string{"2026-11"}}
	got, err := v.Verify(p7s)
	if err != nil {
		t.Fatalf("verify: %v (reason %s)", err, warrant.ReasonOf(err))
	}
	return got
}

func testWarrant(t *testing.T) []byte {
	t.Helper()
	id, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	w := &warrant.Warrant{
		Version: 1, Serial: "W-1", Docket: "D-1", Court: "Test Court", Agency: "Test Police",
		Official: "Inspector Morse", Offence: "fraud", Targets: []string{"alice@example.org"},
		NotBefore: now.Add(-time.Hour).Format(time.RFC3339), NotAfter: now.Add(24 * time.Hour).Format(time.RFC3339),
		KeyIDs: []string{"2026-11"}, Custodians: []string{"cust-1"}, Recipient: id.Public().String(),
	}
	b, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tokenJudge makes a key on the token and certifies it.
func tokenJudge(t *testing.T, tok *softhsmtest.Token, c *court, keyType, label, id string, alwaysAuth bool) *x509.Certificate {
	t.Helper()
	if keyType == "EC:secp384r1" {
		key := trusttest.ECKey(t, elliptic.P384())
		tok.ImportKey(t, key, label, id)
		return c.root.Judge(t, "Judge "+label, key.Public(), now)
	}
	pub := tok.GenerateKey(t, keyType, label, id, alwaysAuth)
	return c.root.Judge(t, "Judge "+label, pub, now)
}

func TestTokenSigns(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	c := newCourt(t)
	cases := []struct {
		keyType    string
		pss        bool
		alwaysAuth bool
	}{
		{"EC:prime256v1", false, true}, // as a PIV slot 9c key
		{"EC:secp384r1", false, false},
		{"rsa:2048", false, false},
		{"rsa:2048", true, false},
	}
	for i, tc := range cases {
		name := fmt.Sprintf("%s pss=%v always-auth=%v", tc.keyType, tc.pss, tc.alwaysAuth)
		t.Run(name, func(t *testing.T) {
			label, id := fmt.Sprintf("key-%d", i), fmt.Sprintf("%02x", i+1)
			cert := tokenJudge(t, tok, c, tc.keyType, label, id, tc.alwaysAuth)
			uri, err := smartcard.ParseURI("pkcs11:token=judge;object=" + label)
			if err != nil {
				t.Fatal(err)
			}
			key, err := smartcard.Open(softhsmtest.Module, uri, tok.PIN, cert)
			if err != nil {
				t.Fatal(err)
			}
			defer key.Close()
			if key.AlwaysAuthenticate() != tc.alwaysAuth {
				t.Fatalf("always-authenticate %v, want %v", key.AlwaysAuthenticate(), tc.alwaysAuth)
			}
			p7s, err := warrant.Sign(testWarrant(t), []warrant.Signer{{Key: key, Chain: []*x509.Certificate{cert}, PSS: tc.pss}}, now)
			if err != nil {
				t.Fatal(err)
			}
			got := c.verify(t, p7s)
			if got.Signers[0].Name != "Judge "+label {
				t.Errorf("signer %q", got.Signers[0].Name)
			}
			key.Close()
			if err := key.Close(); err != nil {
				t.Error("second Close failed")
			}
		})
	}
}

func TestTokenCertificateAndPIN(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	c := newCourt(t)
	cert := tokenJudge(t, tok, c, "EC:prime256v1", "judge-key", "01", false)
	tok.WriteCertificate(t, cert, "judge-key", "01")
	uri, _ := smartcard.ParseURI("pkcs11:token=judge;object=judge-key")
	if _, err := smartcard.Open(softhsmtest.Module, uri, "000000", nil); err == nil {
		t.Fatal("opened with a wrong PIN")
	}
	key, err := smartcard.Open(softhsmtest.Module, uri, tok.PIN, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	if !key.Certificate().Equal(cert) {
		t.Fatal("did not read the certificate from the token")
	}
	p7s, err := warrant.Sign(testWarrant(t), []warrant.Signer{{Key: key, Chain: []*x509.Certificate{key.Certificate()}}}, now)
	if err != nil {
		t.Fatal(err)
	}
	c.verify(t, p7s)

	// A certificate for another key is caught when signing, not later.
	other := c.root.Judge(t, "Judge Other", trusttest.ECKey(t, elliptic.P256()).Public(), now)
	key.Close()
	wrong, err := smartcard.Open(softhsmtest.Module, uri, tok.PIN, other)
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if _, err := warrant.Sign(testWarrant(t), []warrant.Signer{{Key: wrong, Chain: []*x509.Certificate{other}}}, now); err == nil {
		t.Fatal("signed with a certificate for another key")
	}
}

func TestReadPINFromEnv(t *testing.T) {
	t.Setenv(smartcard.PINEnv, "1234")
	pin, err := smartcard.ReadPIN("PIN: ")
	if err != nil || pin != "1234" {
		t.Fatalf("pin %q, %v", pin, err)
	}
	if _, ok := os.LookupEnv(smartcard.PINEnv); ok {
		t.Fatal("PIN left in the environment")
	}
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var _ crypto.Signer = (*smartcard.Key)(nil)

// TestSecondKeyOnTokenRefused: PKCS#11 login state is per token and
// process, so a second key on a logged-in token would skip the PIN check.
func TestSecondKeyOnTokenRefused(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	c := newCourt(t)
	a := tokenJudge(t, tok, c, "EC:prime256v1", "a", "31", false)
	b := tokenJudge(t, tok, c, "EC:prime256v1", "b", "32", false)
	uriA, _ := smartcard.ParseURI("pkcs11:token=judge;object=a")
	uriB, _ := smartcard.ParseURI("pkcs11:token=judge;object=b")
	ka, err := smartcard.Open(softhsmtest.Module, uriA, tok.PIN, a)
	if err != nil {
		t.Fatal(err)
	}
	if kb, err := smartcard.Open(softhsmtest.Module, uriB, "wrong-pin", b); err == nil {
		kb.Close()
		t.Fatal("opened a second key on a logged-in token without checking its PIN")
	}
	ka.Close()
	kb, err := smartcard.Open(softhsmtest.Module, uriB, tok.PIN, b)
	if err != nil {
		t.Fatalf("after the first key closed: %v", err)
	}
	kb.Close()
}
