package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// wrappedSecretFor duplicates a policy-free data object holding s for k,
// as the ceremony wraps a sealed object: the worst case, whose own policy
// would let anything read it once loaded.
func wrappedSecretFor(t *testing.T, k *tpm.ImportKey, s []byte) (tpm2.TPMTPublic, []byte, []byte) {
	t.Helper()
	pub := tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
	seedValue := make([]byte, 32)
	rand.Read(seedValue)
	unique := append(append([]byte{}, seedValue...), s...)
	digest := tpm2.TPM2BDigest{Buffer: sha256Of(unique)}
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &digest)
	dup, seed, err := tpm.WrapFor(ptr(k.Public()), pub, tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seedValue},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: s}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return pub, dup, seed
}

// TestInvariantImportKeyDoesNotRewrap: what is wrapped for the import key
// imports and loads under it, and does not leave through TPM2_Rewrap,
// whatever authorization the caller brings: the import key's policy
// (satisfied for Import, or tried for Rewrap), the EK's PolicySecret(endorsement) with the
// empty endorsement authorization, or the empty password.
func TestInvariantImportKeyDoesNotRewrap(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		k, err := tpm.ProvisionImportKey(conn, tpm.EKRSA2048)
		if err != nil {
			t.Fatal(err)
		}
		s := secret(t)
		pub, dup, seed := wrappedSecretFor(t, k, s)
		loaded, err := tpm.LoadUnderImportKey(conn, k, pub, dup, seed)
		if err != nil {
			t.Fatalf("import and load under the import key: %v", err)
		}
		flushHandle(conn, loaded.ObjectHandle)
		name, _ := tpm2.ObjectName(&pub)

		tries := map[string]tpm2.TPMHandle{}
		for _, cc := range []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCRewrap} {
			sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
			if err != nil {
				t.Fatal(err)
			}
			defer closeSession()
			// The policy refuses the Rewrap branch (PolicyOR fails); the
			// TPM gets the Rewrap with whatever the session holds.
			_ = tpm.PassImportPolicy(conn, sess, cc)
			tries[fmt.Sprintf("the import key's policy passed for command %#x", uint32(cc))] = sess.Handle()
		}
		endorsement, closeEndorsement := endorsementSession(t, conn)
		defer closeEndorsement()
		tries["PolicySecret(endorsement)"] = endorsement.Handle()
		tries["the empty password"] = 0
		for what, h := range tries {
			out, err := rewrapToNull(conn, tpm.ImportKeyHandle(k), h, dup, name.Buffer, seed)
			if err == nil {
				t.Errorf("TPM2_Rewrap under the import key with %s succeeded", what)
			}
			if bytes.Contains(out, s) {
				t.Errorf("the secret came out through TPM2_Rewrap under the import key with %s", what)
			}
		}
	})
}

// TestImportKeyIsCertifiedByTheAK: the AK's certification of the import
// key verifies for that key and nonce, and for nothing else: not another
// key (the EK's public key in the import key template), not another
// nonce; and provisioning again finds the same key.
func TestImportKeyIsCertifiedByTheAK(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, err := tpm.ProvisionEK(conn, tpm.EKRSA2048)
		if err != nil {
			t.Fatal(err)
		}
		k, err := tpm.ProvisionImportKey(conn, tpm.EKRSA2048)
		if err != nil {
			t.Fatal(err)
		}
		again, err := tpm.ProvisionImportKey(conn, tpm.EKRSA2048)
		if err != nil || !bytes.Equal(again.Name(), k.Name()) {
			t.Fatalf("provisioning again gave another key (%v)", err)
		}
		ak, err := tpm.LoadAK(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer ak.Close()
		nonce := []byte("enrollment nonce")
		c, err := ak.CertifyImportKey(k, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if err := tpm.VerifyImportKeyCertification(ak.Public, k, c, nonce); err != nil {
			t.Fatalf("the certification does not verify: %v", err)
		}
		if tpm.VerifyImportKeyCertification(ak.Public, k, c, []byte("another nonce")) == nil {
			t.Error("the certification verifies for another nonce")
		}
		asEK, err := tpm.NewImportKey(ek.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if tpm.VerifyImportKeyCertification(ak.Public, asEK, c, nonce) == nil {
			t.Error("the certification verifies for another key")
		}
	})
}

// FuzzVerifyImportKeyCertification: no attestation and signature an
// attacker sends verifies for a key the AK never certified, and none
// panics.
func FuzzVerifyImportKeyCertification(f *testing.F) {
	akKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	ak, err := tpm.NewAKPublicForTest(&akKey.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	key := tpmtest.RandomImportKey(f)
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17}, []byte{0, 0x18})
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		c := &tpm.ImportKeyCertification{Attest: attest, Signature: sig}
		if tpm.VerifyImportKeyCertification(ak, key, c, []byte("nonce")) == nil {
			t.Fatal("an uncertified import key verified")
		}
	})
}

// TestKeyNamesAreTheirPublicAreasNames: the Name kept with an import key
// is its public area's, and a caller changing the bytes it got back does
// not change the key's Name.
func TestKeyNamesAreTheirPublicAreasNames(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tpm.NewImportKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public()
	want, err := tpm2.ObjectName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	got := k.Name()
	if !bytes.Equal(got, want.Buffer) {
		t.Fatalf("Name %x, want %x", got, want.Buffer)
	}
	got[len(got)-1] ^= 1
	if !bytes.Equal(k.Name(), want.Buffer) {
		t.Fatal("changing the returned Name changed the key's")
	}
	ek, err := tpm.NewEK(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ek.Name(), k.Name()) || len(ek.Name()) != len(want.Buffer) {
		t.Fatalf("EK Name %x should differ from the import key's %x (other template)", ek.Name(), k.Name())
	}
}
