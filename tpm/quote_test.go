package tpm_test

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func nonce(t testing.TB) []byte { return secret(t) }

func TestQuoteVerifiesOffline(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		bootedState(t, conn)
		ak, err := tpm.LoadAK(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer ak.Close()
		n := nonce(t)
		q, pcrs, err := ak.Quote([]int{8, 9}, n)
		if err != nil {
			t.Fatal(err)
		}
		// The AK travels as its public area, as in an enrollment.
		akPub, err := tpm.ParseAKPublic(ak.Public.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if err := tpm.VerifyQuote(akPub, q, n, pcrs); err != nil {
			t.Fatal(err)
		}

		otherPCRs := pcrs.Extend(9, make([]byte, 32))
		flipped := *q
		flipped.Attest = bytes.Clone(q.Attest)
		flipped.Attest[len(flipped.Attest)-1] ^= 1
		fewerPCRs := tpm.PCRValues{8: pcrs[8]}
		for name, c := range map[string]struct {
			q     *tpm.Quote
			nonce []byte
			pcrs  tpm.PCRValues
		}{
			"other nonce":      {q, nonce(t), pcrs},
			"other PCR values": {q, n, otherPCRs},
			"other selection":  {q, n, fewerPCRs},
			"altered attest":   {&flipped, n, pcrs},
			"no signature":     {&tpm.Quote{Attest: q.Attest}, n, pcrs},
		} {
			if err := tpm.VerifyQuote(akPub, c.q, c.nonce, c.pcrs); !errors.Is(err, tpm.ErrQuoteMismatch) {
				t.Errorf("%s: got %v, want ErrQuoteMismatch", name, err)
			}
		}
	})
}

func TestAKIsStableAndBoundToEK(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, err := tpm.ProvisionEK(conn, tpm.EKRSA2048)
		if err != nil {
			t.Fatal(err)
		}
		ak, err := tpm.LoadAK(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer ak.Close()
		again, err := tpm.LoadAK(conn)
		if err != nil {
			t.Fatal(err)
		}
		sameKey := bytes.Equal(again.Public.Name(), ak.Public.Name())
		again.Close()
		if !sameKey {
			t.Fatal("the attestation key changed between loads")
		}

		challenge, want, err := tpm.MakeChallenge(ek, ak.Public.Name())
		if err != nil {
			t.Fatal(err)
		}
		bus := &tpmtest.Recorder{TPM: conn}
		busAK, err := tpm.LoadAK(bus)
		if err != nil {
			t.Fatal(err)
		}
		defer busAK.Close()
		got, err := busAK.Activate(ek, challenge)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("activation recovered another secret")
		}
		if bus.Seen(want) {
			t.Fatal("the challenge secret crossed the bus in the clear")
		}

		// A challenge for another key's Name is refused by the TPM.
		wrongName := bytes.Clone(ak.Public.Name())
		wrongName[len(wrongName)-1] ^= 1
		wrong, _, err := tpm.MakeChallenge(ek, wrongName)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ak.Activate(ek, wrong); err == nil {
			t.Fatal("activated a credential made for another key")
		}
	})
}

// TestQuoteVerifiesWithTPM2CheckQuote hands our quote to tpm2_checkquote.
// It checks the signature, the nonce and the PCR digest; it is given the
// PCR values through our own digest, since tpm2_checkquote -f only reads
// tpm2_quote's private PCR file format.
func TestQuoteVerifiesWithTPM2CheckQuote(t *testing.T) {
	requireTool(t, "tpm2_checkquote")
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		bootedState(t, conn)
		ak, err := tpm.LoadAK(conn)
		if err != nil {
			t.Fatal(err)
		}
		n := nonce(t)
		q, _, err := ak.Quote([]int{8, 9}, n)
		ak.Close()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		der, err := x509.MarshalPKIXPublicKey(ak.Public.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{
			"ak.pem":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
			"quote.msg": q.Attest,
			"quote.sig": q.Signature,
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		args := []string{"tpm2_checkquote", "-u", filepath.Join(dir, "ak.pem"),
			"-m", filepath.Join(dir, "quote.msg"), "-s", filepath.Join(dir, "quote.sig"),
			"-g", "sha256"}
		tpm2Tool(t, target.Swtpm, append(args, "-q", hex.EncodeToString(n))...)

		other := nonce(t)
		cmd := append(args, "-q", hex.EncodeToString(other))
		if out, err := runTool(target.Swtpm, cmd...); err == nil {
			t.Fatalf("tpm2_checkquote accepted another nonce:\n%s", out)
		}
	})
}
