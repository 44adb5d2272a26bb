package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
)

// TestRequesterMadeEnvelopesAreRefused: envelopes made out of another
// envelope's R without its r — α·R, R + β·G, R relabelled to another
// target or key ID, R with another envelope's proof, the header over
// another ciphertext — are refused by every reader: the parser, the check
// the appliance runs on a warrant's reference, opening with a recovered
// key, and opening from scoped releases. The honest envelopes pass all.
func TestRequesterMadeEnvelopesAreRefused(t *testing.T) {
	k, pub := testKey(t, "2026-11")
	victim, err := Seal(pub, "alice@example.org", []byte("envelope B"))
	if err != nil {
		t.Fatal(err)
	}
	own, err := Seal(pub, "bob@example.org", []byte("the requester's own envelope"))
	if err != nil {
		t.Fatal(err)
	}
	scoped := *pub
	scoped.Mode = ModeScoped
	for _, honest := range [][]byte{victim, own} {
		env, err := ParseEnvelope(honest)
		if err != nil {
			t.Fatalf("an honest envelope: %v", err)
		}
		ref := env.Ref()
		if err := CheckSealProof(ref.KeyID, ref.Target, ref.Enc, ref.CiphertextSHA256, ref.Proof); err != nil {
			t.Fatalf("an honest envelope's reference: %v", err)
		}
		if _, _, err := Open(k, honest); err != nil {
			t.Fatalf("an honest envelope does not open: %v", err)
		}
	}
	forgeries := escrowtest.Forgeries(t, victim, own)
	if len(forgeries) < 6 {
		t.Fatalf("%d forgeries", len(forgeries))
	}
	for _, f := range forgeries {
		if _, err := ParseEnvelope(f.Envelope); !errors.Is(err, ErrUnproven) || !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: parsed (%v)", f.Name, err)
		}
		r := f.Ref
		if err := CheckSealProof(r.KeyID, r.Target, r.Enc, r.CiphertextSHA256, r.Proof); !errors.Is(err, ErrUnproven) {
			t.Errorf("%s: the reference passes (%v)", f.Name, err)
		}
		if _, pt, err := Open(k, f.Envelope); !errors.Is(err, ErrUnproven) || pt != nil {
			t.Errorf("%s: opened with the key (%v)", f.Name, err)
		}
		if _, pt, err := OpenScoped(nil, &scoped, nil, f.Envelope); !errors.Is(err, ErrUnproven) || pt != nil {
			t.Errorf("%s: worked on for a scoped opening (%v)", f.Name, err)
		}
	}
}

// TestVersion1EnvelopesAreRefusedForScopedUse: an envelope of the format
// without proofs is refused wherever custodians' work depends on it, and
// still opens with a recovered share-mode key.
func TestVersion1EnvelopesAreRefusedForScopedUse(t *testing.T) {
	k, pub := testKey(t, "2026-11")
	v1 := sealV1(t, pub, "alice@example.org", []byte("an old message"))
	if _, err := ParseEnvelope(v1); !errors.Is(err, ErrUnproven) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("a version 1 envelope: %v", err)
	}
	scoped := *pub
	scoped.Mode = ModeScoped
	if _, _, err := OpenScoped(nil, &scoped, nil, v1); !errors.Is(err, ErrUnproven) {
		t.Fatalf("a version 1 envelope opened from scoped releases: %v", err)
	}
	if _, pt, err := Open(k, v1); err != nil || string(pt) != "an old message" {
		t.Fatalf("a version 1 envelope with the recovered key: %q, %v", pt, err)
	}
	edited := bytes.Replace(v1, []byte("alice@"), []byte("bobby@"), 1)
	if _, _, err := Open(k, edited); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("an edited version 1 envelope opened: %v", err)
	}
}

// sealV1 writes an envelope as version 1 did: the version 2 layout less
// the proof, under the old magic.
func sealV1(t *testing.T, pub *Public, target string, plaintext []byte) []byte {
	t.Helper()
	data, err := Seal(pub, target, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelope(data)
	if err != nil {
		t.Fatal(err)
	}
	env.Proof = nil
	b, err := env.encode()
	if err != nil {
		t.Fatal(err)
	}
	// The empty proof's length prefix goes; the magic becomes version 1.
	head := len(envelopeMagic) + 2 + len(env.KeyID) + 2 + len(env.Target) + 2 + pointLen
	return append(append([]byte(envelopeMagicV1), b[len(envelopeMagic):head]...), b[head+2:]...)
}

// TestSealProofEncodingIsCanonical: the scalars of a proof must be below
// the group order, the point uncompressed; an encoding of the same values
// plus n, a compressed R, or a wrong length is refused before any
// arithmetic says whether it would match.
func TestSealProofEncodingIsCanonical(t *testing.T) {
	_, pub := testKey(t, "2026-11")
	data, err := Seal(pub, "alice@example.org", []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseEnvelope(data)
	if err != nil {
		t.Fatal(err)
	}
	st := &sealStatement{keyID: env.KeyID, target: env.Target, digest: env.CiphertextSHA256(), enc: env.Enc}
	if err := verifySeal(st, env.Proof); err != nil {
		t.Fatal(err)
	}
	n := elliptic.P256().Params().N.FillBytes(make([]byte, 32))
	compressed := append([]byte{2 + env.Enc[64]&1}, env.Enc[1:33]...)
	for name, c := range map[string]struct {
		enc, proof []byte
		want       string
	}{
		"c = n":           {env.Enc, append(bytes.Clone(n), env.Proof[32:]...), "canonical scalar"},
		"z = n":           {env.Enc, append(bytes.Clone(env.Proof[:32]), n...), "canonical scalar"},
		"all ones":        {env.Enc, bytes.Repeat([]byte{0xff}, 64), "canonical scalar"},
		"short":           {env.Enc, env.Proof[:63], "63 bytes"},
		"none":            {env.Enc, nil, "no seal proof"},
		"compressed R":    {compressed, env.Proof, "encapsulated key"},
		"R off the curve": {append([]byte{4}, make([]byte, 64)...), env.Proof, "encapsulated key"},
	} {
		bad := *st
		bad.enc = c.enc
		if err := verifySeal(&bad, c.proof); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
	for name, bad := range map[string]sealStatement{
		"a target longer than an envelope holds": {keyID: st.keyID, target: strings.Repeat("a", 70000), digest: st.digest, enc: st.enc},
		"an empty key ID":                        {keyID: "", target: st.target, digest: st.digest, enc: st.enc},
	} {
		if err := CheckSealProof(bad.keyID, bad.target, bad.enc, bad.digest, env.Proof); !errors.Is(err, ErrUnproven) {
			t.Errorf("%s: %v", name, err)
		}
	}
	short := *st
	short.digest = sha256.New().Sum(nil)[:31]
	if err := verifySeal(&short, env.Proof); err == nil {
		t.Error("a 31-byte digest passed")
	}
}

// TestSealProofTranscriptIsAsDocumented builds the transcript from its
// description in docs/escrow.md, byte by byte, and pins the challenge it
// hashes to: a change of encoding, label or hash shows here, not in
// envelopes that no longer verify.
func TestSealProofTranscriptIsAsDocumented(t *testing.T) {
	point := func(k byte) []byte {
		priv, err := ecdh.P256().NewPrivateKey(append(make([]byte, 31), k))
		if err != nil {
			t.Fatal(err)
		}
		return priv.PublicKey().Bytes()
	}
	digest := sha256.Sum256([]byte("ciphertext"))
	st := &sealStatement{keyID: "2026-11", target: "alice@example.org", digest: digest[:], enc: point(2)}
	a := point(3)
	var T []byte
	T = append(T, 0, 7)
	T = append(T, "2026-11"...)
	T = append(T, 0, 17)
	T = append(T, "alice@example.org"...)
	T = append(T, digest[:]...)
	T = append(T, point(1)...) // G
	T = append(T, st.enc...)
	T = append(T, a...)
	want, _ := g.HashToScalar(T, []byte("custodian envelope seal proof v1")).MarshalBinary()
	got := st.challenge(a)
	if !bytes.Equal(got, want) {
		t.Fatalf("challenge %x, the documented transcript gives %x", got, want)
	}
	const pinned = "b290e5e52f2ea55b453967d38a5f0c98dd3701b480a99b316e9ec3ff846a9686"
	if hex.EncodeToString(got) != pinned {
		t.Fatalf("challenge %x, pinned %s", got, pinned)
	}
}

// FuzzCheckSealProof: what the appliance checks in a warrant's envelope
// reference never panics, and an accepted reference has canonical parts:
// an uncompressed point and scalars below n.
func FuzzCheckSealProof(f *testing.F) {
	_, pub := testKey(f, "2026-11")
	data, _ := Seal(pub, "alice@example.org", []byte("m"))
	env, _ := ParseEnvelope(data)
	f.Add(env.KeyID, env.Target, env.Enc, env.CiphertextSHA256(), env.Proof)
	f.Add("2026-11", "alice@example.org", env.Enc, env.CiphertextSHA256(), []byte{})
	f.Fuzz(func(t *testing.T, keyID, target string, enc, digest, proof []byte) {
		if err := CheckSealProof(keyID, target, enc, digest, proof); err != nil {
			if !errors.Is(err, ErrUnproven) || !errors.Is(err, ErrEnvelope) {
				t.Fatalf("a refusal that is not ErrUnproven: %v", err)
			}
			return
		}
		c, z := g.NewScalar(), g.NewScalar()
		if _, err := parsePoint(enc); err != nil || len(proof) != sealProofLen || len(digest) != 32 ||
			c.UnmarshalBinary(proof[:32]) != nil || z.UnmarshalBinary(proof[32:]) != nil {
			t.Fatalf("accepted a non-canonical reference: enc %x, proof %x", enc, proof)
		}
	})
}
