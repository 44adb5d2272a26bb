package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/internal/p256"
)

// TestRequesterMadeEnvelopesAreRefused: envelopes made out of another
// envelope's R without its r — α·R, R + β·G, R relabelled to another
// target or key ID, R with another envelope's proof, the header over
// another ciphertext — are refused by every reader: the parser, the check
// the appliance runs on a warrant's reference, opening with a recovered
// key, and opening from scoped releases. The honest envelopes pass all.
func TestRequesterMadeEnvelopesAreRefused(t *testing.T) {
	for _, v := range sealVersions {
		t.Run(v.name, func(t *testing.T) { requesterMadeEnvelopesAreRefused(t, v.seal) })
	}
}

// sealVersions seal envelopes of each version scoped mode reads.
var sealVersions = []struct {
	name string
	seal func(testing.TB, *Public, string, []byte) []byte
}{{"version 3", sealV3}, {"version 2", sealV2}}

func requesterMadeEnvelopesAreRefused(t *testing.T, seal func(testing.TB, *Public, string, []byte) []byte) {
	k, pub := testKey(t, "2026-11")
	victim := seal(t, pub, "alice@example.org", []byte("envelope B"))
	own := seal(t, pub, "bob@example.org", []byte("the requester's own envelope"))
	scoped := *pub
	scoped.Mode = ModeScoped
	var honestRefs []warrant.EnvelopeRef
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
		honestRefs = append(honestRefs, ref)
	}
	if errs := CheckSealProofs(honestRefs); errs != nil {
		t.Fatalf("honest references checked together: %v", errs)
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
		// Among honest references, checked together: it alone is named.
		refs := append(slices.Clone(honestRefs), r, honestRefs[0], honestRefs[1])
		if i, err := FirstFailure(CheckSealProofs(refs)); i != 2 || !errors.Is(err, ErrUnproven) {
			t.Errorf("%s: checked with others, failure %d (%v), want 2", f.Name, i, err)
		}
		if _, pt, err := Open(k, f.Envelope); !errors.Is(err, ErrUnproven) || pt != nil {
			t.Errorf("%s: opened with the key (%v)", f.Name, err)
		}
		if _, pt, err := OpenScoped(nil, &scoped, nil, f.Envelope); !errors.Is(err, ErrUnproven) || pt != nil {
			t.Errorf("%s: worked on for a scoped opening (%v)", f.Name, err)
		}
	}
}

// sealV3 seals as Seal does (version 3).
func sealV3(t testing.TB, pub *Public, target string, plaintext []byte) []byte {
	t.Helper()
	data, err := Seal(pub, target, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// sealV2 seals a version 2 envelope, with a c ‖ z proof, as senders did
// before version 3.
func sealV2(t testing.TB, pub *Public, target string, plaintext []byte) []byte {
	t.Helper()
	data, err := seal(pub, target, plaintext, proveSeal)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte(envelopeMagicV2)) {
		t.Fatal("not a version 2 envelope")
	}
	return data
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
	data := sealV2(t, pub, "alice@example.org", []byte("m"))
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
		"long":            {env.Enc, append(bytes.Clone(env.Proof), 0, 0), "66 bytes"},
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
// reference never panics, an accepted reference has canonical parts
// (an uncompressed point, scalars below n, a compressed A), and checking
// it together with an honest one (CheckSealProofs) gives the same verdict.
func FuzzCheckSealProof(f *testing.F) {
	_, pub := testKey(f, "2026-11")
	data, _ := Seal(pub, "alice@example.org", []byte("m"))
	env, _ := ParseEnvelope(data)
	f.Add(env.KeyID, env.Target, env.Enc, env.CiphertextSHA256(), env.Proof)
	f.Add("2026-11", "alice@example.org", env.Enc, env.CiphertextSHA256(), []byte{})
	v2, _ := ParseEnvelope(sealV2(f, pub, "alice@example.org", []byte("m")))
	f.Add(v2.KeyID, v2.Target, v2.Enc, v2.CiphertextSHA256(), v2.Proof)
	honest := env.Ref()
	f.Fuzz(func(t *testing.T, keyID, target string, enc, digest, proof []byte) {
		// Checked with an honest reference, together: the same verdict.
		ref := warrant.EnvelopeRef{KeyID: keyID, Target: target, Enc: enc, CiphertextSHA256: digest, Proof: proof}
		errs := CheckSealProofs([]warrant.EnvelopeRef{honest, ref})
		if single := CheckSealProof(keyID, target, enc, digest, proof); (single == nil) != (errs == nil) || (errs != nil && (errs[0] != nil || errs[1] == nil)) {
			t.Fatalf("alone: %v; together: %v", single, errs)
		}
		if err := CheckSealProof(keyID, target, enc, digest, proof); err != nil {
			if !errors.Is(err, ErrUnproven) || !errors.Is(err, ErrEnvelope) {
				t.Fatalf("a refusal that is not ErrUnproven: %v", err)
			}
			return
		}
		first, z := g.NewScalar(), g.NewScalar()
		var canonical bool
		switch len(proof) {
		case sealProofLen: // c ‖ z
			canonical = first.UnmarshalBinary(proof[:32]) == nil && z.UnmarshalBinary(proof[32:]) == nil
		case sealProofV3Len: // A ‖ z
			_, err := p256.ParseCompressed(proof[:33])
			canonical = err == nil && z.UnmarshalBinary(proof[33:]) == nil
		}
		if _, err := parsePoint(enc); err != nil || !canonical || len(digest) != 32 {
			t.Fatalf("accepted a non-canonical reference: enc %x, proof %x", enc, proof)
		}
	})
}
