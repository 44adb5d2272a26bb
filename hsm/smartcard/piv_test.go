package smartcard_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/smartcard"
	"github.com/custodian-project/custodian/hsm/smartcard/pivtest"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tests/need"
)

const pivPIN = "123456"

// pivKeyURI names slot 9c of the card whose token label (OpenSC: the
// certificate's common name) is label.
func pivKeyURI(t *testing.T, label string) smartcard.URI {
	t.Helper()
	uri, err := smartcard.ParseURI("pkcs11:token=" + strings.ReplaceAll(label, " ", "%20") + ";object=SIGN%20key")
	if err != nil {
		t.Fatal(err)
	}
	return uri
}

// opensslVerifies checks p7s with openssl cms -verify against the court
// root and its CRL, and that it returns content. -purpose any: openssl's
// default S/MIME purpose wants emailProtection, a judge's certificate has
// id-kp-documentSigning.
func opensslVerifies(t *testing.T, c *court, p7s, content []byte) {
	t.Helper()
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	trustFile := writeFile(t, dir, "trust.pem", append(trusttest.PEM(c.root.Cert), trusttest.CRLPEM(c.crl)...))
	in := writeFile(t, dir, "w.p7s", p7s)
	out := filepath.Join(dir, "w.json")
	openssl(t, os.Environ(), "cms", "-verify", "-binary", "-inform", "DER", "-in", in,
		"-CAfile", trustFile, "-crl_check", "-purpose", "any", "-out", out)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("openssl returned other content: %v", err)
	}
}

// judgeCards starts a private pcscd and inserts one card per judge, each
// given as name and key kind, into the reader's slots in order.
func judgeCards(t *testing.T, c *court, judges ...[2]string) []*pivtest.Card {
	t.Helper()
	reader := pivtest.StartReader(t)
	cards := make([]*pivtest.Card, len(judges))
	for i, j := range judges {
		cards[i] = pivtest.NewJudgeCard(t, c.root, j[0], j[1], pivPIN, now)
		reader.Insert(t, i, cards[i])
	}
	return cards
}

// TestPIVCardsSignThroughOpenSC: judges' PIV cards (ECDSA P-256 and
// RSA-2048 in slot 9c) sign through pcscd, OpenSC's PIV driver and
// opensc-pkcs11.so; the card asks for the PIN before each signature, the
// key gives it again; a second card co-signs; the appliance's verifier
// (two signers, document-signing EKU required) and openssl accept.
func TestPIVCardsSignThroughOpenSC(t *testing.T) {
	c := newCourt(t)
	cards := judgeCards(t, c, [2]string{"Judge Ada", pivtest.ECDSAP256}, [2]string{"Judge Bea", pivtest.RSA2048})
	ada, bea := cards[0], cards[1]

	content := testWarrant(t)
	var p7s []byte
	for _, judge := range []struct {
		name string
		card *pivtest.Card
	}{{"Judge Ada", ada}, {"Judge Bea", bea}} {
		key, err := smartcard.Open(pivtest.Module, pivKeyURI(t, judge.name), pivPIN, nil)
		if err != nil {
			t.Fatalf("%s: %v", judge.name, err)
		}
		if !key.Certificate().Equal(judge.card.Certificate()) {
			t.Fatalf("%s: did not read the 9c certificate from the card", judge.name)
		}
		if !key.AlwaysAuthenticate() {
			t.Fatalf("%s: OpenSC does not mark slot 9c CKA_ALWAYS_AUTHENTICATE", judge.name)
		}
		// The card signs only right after a VERIFY: two signatures in a
		// row show the key gives the PIN again for each.
		signers := []warrant.Signer{{Key: key, Chain: []*x509.Certificate{key.Certificate()}}}
		if _, err := warrant.Sign(content, signers, now); err != nil {
			t.Fatalf("%s: first signature: %v", judge.name, err)
		}
		if p7s == nil {
			p7s, err = warrant.Sign(content, signers, now)
		} else {
			p7s, err = warrant.CoSign(p7s, signers, now)
		}
		key.Close()
		if err != nil {
			t.Fatalf("%s: second signature: %v", judge.name, err)
		}
		if n := judge.card.Signatures(); n != 2 {
			t.Fatalf("%s: the card made %d signatures, want 2", judge.name, n)
		}
	}

	if err := c.store.SetPolicy(trust.Policy{Signers: 2, EKUs: []string{pivtest.DocumentSigning.String()}}); err != nil {
		t.Fatal(err)
	}
	got := c.verify(t, p7s)
	if len(got.Signers) != 2 || got.Signers[0].Name != "Judge Ada" || got.Signers[1].Name != "Judge Bea" {
		t.Fatalf("signers %+v", got.Signers)
	}
	opensslVerifies(t, c, p7s, content)
}

// TestInvariantPIVWrongPINCostsATry: a wrong PIN fails with an error that
// says so, costs one of the card's tries and says when one is left; with
// none left the card refuses even the right PIN, and says it is locked.
func TestInvariantPIVWrongPINCostsATry(t *testing.T) {
	c := newCourt(t)
	card := judgeCards(t, c, [2]string{"Judge Ada", pivtest.ECDSAP256})[0]
	uri := pivKeyURI(t, "Judge Ada")
	for i, want := range []struct {
		says string
		is   error
	}{
		{"wrong PIN, the card counted a failed try", smartcard.ErrWrongPIN},
		{"one try is left before the card locks the PIN", smartcard.ErrWrongPIN},
		{"the PIN is locked after too many wrong tries", smartcard.ErrPINLocked},
	} {
		key, err := smartcard.Open(pivtest.Module, uri, "000000", nil)
		if err == nil {
			key.Close()
			t.Fatal("opened the card with a wrong PIN")
		}
		if !strings.Contains(err.Error(), want.says) || !errors.Is(err, want.is) {
			t.Errorf("wrong PIN %d: %q lacks %q or is not %v", i+1, err, want.says, want.is)
		}
		if tries := card.Tries(); tries != pivtest.MaxTries-1-i {
			t.Fatalf("after %d wrong PINs the card has %d tries, want %d", i+1, tries, pivtest.MaxTries-1-i)
		}
	}
	key, err := smartcard.Open(pivtest.Module, uri, pivPIN, nil)
	if err == nil {
		key.Close()
		t.Fatal("a locked card opened")
	}
	if !errors.Is(err, smartcard.ErrPINLocked) {
		t.Errorf("locked card: %q does not say so", err)
	}
}

// TestPIVTwoCardsSameLabel: two cards with one label are told apart by
// serial= (the CHUID's GUID), never picked at random.
func TestPIVTwoCardsSameLabel(t *testing.T) {
	c := newCourt(t)
	cards := judgeCards(t, c, [2]string{"Judge Ada", pivtest.ECDSAP256}, [2]string{"Judge Ada", pivtest.ECDSAP256})
	first, second := cards[0], cards[1]
	if _, err := smartcard.Open(pivtest.Module, pivKeyURI(t, "Judge Ada"), pivPIN, nil); err == nil || !strings.Contains(err.Error(), "several tokens match") {
		t.Fatalf("two cards named alike: %v", err)
	}
	uri := pivKeyURI(t, "Judge Ada")
	uri.Serial = pivtest.Serial(second)
	key, err := smartcard.Open(pivtest.Module, uri, pivPIN, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	if !key.Certificate().Equal(second.Certificate()) {
		t.Fatal("serial= picked the other card")
	}
	if first.Tries() != pivtest.MaxTries || second.Tries() != pivtest.MaxTries {
		t.Fatal("a PIN was tried on a card that was not chosen")
	}
}

// BenchmarkPIVSignThroughOpenSC measures one signature through OpenSC on
// the emulated card: SignInit, the context-specific VERIFY and GENERAL
// AUTHENTICATE, each an APDU over pcscd and the virtual reader.
func BenchmarkPIVSignThroughOpenSC(b *testing.B) {
	reader := pivtest.StartReader(b)
	root := trusttest.NewRoot(b, "Test Court Root", now)
	card := pivtest.NewJudgeCard(b, root, "Judge Ada", pivtest.ECDSAP256, pivPIN, now)
	reader.Insert(b, 0, card)
	uri, err := smartcard.ParseURI("pkcs11:token=Judge%20Ada;object=SIGN%20key")
	if err != nil {
		b.Fatal(err)
	}
	key, err := smartcard.Open(pivtest.Module, uri, pivPIN, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer key.Close()
	digest := make([]byte, 32)
	b.ResetTimer()
	for b.Loop() {
		if _, err := key.Sign(nil, digest, crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
