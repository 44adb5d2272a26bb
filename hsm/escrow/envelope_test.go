package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson/strictjsontest"
	"github.com/custodian-project/custodian/hsm/warrant"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func testKey(t testing.TB, keyID string) (*Key, *Public) {
	t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := newKey(keyID, priv.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return k, &Public{KeyID: keyID, PublicKey: k.PublicKey()}
}

func TestEnvelopeOpensOnlyWithItsKeyIDAndTarget(t *testing.T) {
	k, pub := testKey(t, "2026-11")
	env, err := Seal(pub, "target-1", []byte("intercepted message"))
	if err != nil {
		t.Fatal(err)
	}
	got, pt, err := Open(k, env)
	if err != nil || !bytes.Equal(pt, []byte("intercepted message")) || got.Target != "target-1" {
		t.Fatalf("open: %v, %q", err, pt)
	}

	sameScalarOtherEpoch, _ := newKey("2026-12", k.priv.Bytes())
	other, _ := testKey(t, "2026-11")
	edited := bytes.Replace(env, []byte("target-1"), []byte("target-2"), 1)
	for name, c := range map[string]struct {
		k   *Key
		env []byte
	}{
		"key for another key ID": {sameScalarOtherEpoch, env},
		"another key":            {other, env},
		"edited target":          {k, edited},
		"flipped ciphertext":     {k, append(bytes.Clone(env[:len(env)-1]), env[len(env)-1]^1)},
		"truncated":              {k, env[:len(env)-20]},
	} {
		if _, _, err := Open(c.k, c.env); !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: %v, want ErrEnvelope", name, err)
		}
	}
	if _, err := Seal(pub, "", []byte("x")); err == nil {
		t.Error("sealed to an empty target")
	}
	if _, err := Seal(pub, "a\nb", []byte("x")); err == nil {
		t.Error("sealed to a target with a newline")
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	k, _ := testKey(t, "epoch:7")
	again, err := ParseKey(k.String() + "\n")
	if err != nil || again.String() != k.String() || again.KeyID() != "epoch:7" {
		t.Fatalf("%v: %q", err, again)
	}
	for _, bad := range []string{"", "CUSTODIAN-ESCROW-KEY-V1:x", "CUSTODIAN-ESCROW-KEY-V1:2026-11:!!", "OTHER:2026-11:AAAA"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzParseEnvelope: an accepted envelope keeps the format's rules, is
// canonical (its fields encode back to exactly the bytes read) and carries
// a seal proof that verifies for exactly its fields; a version 1 envelope
// is never accepted.
func FuzzParseEnvelope(f *testing.F) {
	_, pub := func() (*Key, *Public) {
		priv, _ := ecdh.P256().GenerateKey(rand.Reader)
		k, _ := newKey("2026-11", priv.Bytes())
		return k, &Public{KeyID: "2026-11", PublicKey: k.PublicKey()}
	}()
	for _, v := range sealVersions {
		env := v.seal(f, pub, "t", []byte("m"))
		other := v.seal(f, pub, "u", []byte("another message"))
		f.Add(env)
		f.Add(append([]byte(envelopeMagicV1), env[len(envelopeMagic):]...))
		for _, forged := range escrowtest.Forgeries(f, env, other) {
			f.Add(forged.Envelope)
		}
		// Each version's header on the other's proof.
		f.Add(append([]byte(envelopeMagicV2), env[len(envelopeMagic):]...))
		f.Add(append([]byte(envelopeMagic), env[len(envelopeMagic):]...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEnvelope(data)
		if err != nil {
			if e != nil {
				t.Fatal("an envelope beside an error")
			}
			return
		}
		if ids.CheckKeyID(e.KeyID) != nil || checkTarget(e.Target) != nil || len(e.Enc) != 65 || len(e.Proof) != proofLen(string(data[:len(envelopeMagic)])) || len(e.ciphertext) < 16 {
			t.Fatalf("accepted key ID %q, target %q, %d-byte enc, %d-byte proof, %d-byte ciphertext", e.KeyID, e.Target, len(e.Enc), len(e.Proof), len(e.ciphertext))
		}
		if again, err := e.encode(); err != nil || !bytes.Equal(again, data) {
			t.Fatalf("the envelope re-encodes to other bytes (%v):\n%x\n%x", err, data, again)
		}
		st := &sealStatement{keyID: e.KeyID, target: e.Target, digest: e.CiphertextSHA256(), enc: e.Enc}
		if err := verifySeal(st, e.Proof); err != nil {
			t.Fatalf("accepted an envelope whose proof fails: %v", err)
		}
		if errs := CheckSealProofs([]warrant.EnvelopeRef{e.Ref(), e.Ref()}); errs != nil {
			t.Fatalf("accepted an envelope whose proof fails when checked with others: %v", errs)
		}
	})
}

// seedCeremony makes real escrow files for fuzz seeds, with TPM-less EKs.
func seedCeremony(f *testing.F) (*Public, []*Bundle) {
	ms := []Member{{ID: "court-a", EK: tpmtest.RandomEK(f), ImportKey: tpmtest.RandomImportKey(f)}, {ID: "court-b", EK: tpmtest.RandomEK(f), ImportKey: tpmtest.RandomImportKey(f)}}
	pub, bundles, err := Ceremony("2026-11", 2, tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}, ms, WithMode(ModeShare))
	if err != nil {
		f.Fatal(err)
	}
	return pub, bundles
}

func FuzzParseBundle(f *testing.F) {
	_, bundles := seedCeremony(f)
	data, _ := bundles[0].Marshal()
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		if v, err := ParseBundle(data); err == nil {
			strictjsontest.Accepted(t, data, v, ParseBundle)
		}
	})
}

func FuzzParsePublic(f *testing.F) {
	pub, _ := seedCeremony(f)
	data, _ := pub.Marshal()
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePublic(data)
		if err == nil && (p.Threshold < 2 || p.Threshold > len(p.Custodians)) {
			t.Fatalf("accepted threshold %d of %d", p.Threshold, len(p.Custodians))
		}
	})
}

func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(`{"version":1,"mode":"share","key_id":"2026-11","custodian_id":"court-a","index":1,"warrant_digest":"AAAA","recipient":"x","sealed_share":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if v, err := ParseRelease(data); err == nil {
			strictjsontest.Accepted(t, data, v, ParseRelease)
		}
	})
}
