package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha3"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/cloudflare/circl/secretsharing"

	"github.com/custodian-project/custodian/tpm"
)

// splitKey makes an escrow file and its shares as a ceremony does, without
// TPMs: a random scalar split threshold-of-n, indices 1..n.
func splitKey(tb testing.TB, keyID string, threshold, n int) (*Public, []secretsharing.Share) {
	tb.Helper()
	ss := secretsharing.New(rand.Reader, uint(threshold-1), g.RandomNonZeroScalar(rand.Reader))
	pub := &Public{Version: Version, KeyID: keyID, Mode: ModeShare, Threshold: threshold,
		PCRs: tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}, SecurityVersion: 1}
	for _, c := range ss.CommitSecret() {
		b, err := c.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		pub.Commitments = append(pub.Commitments, b)
	}
	pub.PublicKey = pub.Commitments[0]
	for i := range n {
		id := fmt.Sprintf("court-%d", i+1)
		pub.Custodians = append(pub.Custodians, Custodian{ID: id, Index: i + 1, EKName: []byte(id), ImportKeyName: []byte(id)})
	}
	if err := pub.check(); err != nil {
		tb.Fatal(err)
	}
	return pub, ss.Share(uint(n))
}

// partialsFor does what each chosen custodian's TPM does: s_i·R.
func partialsFor(tb testing.TB, shares []secretsharing.Share, which []int, enc []byte) []PartialShare {
	tb.Helper()
	r := g.NewElement()
	if err := r.UnmarshalBinary(enc); err != nil {
		tb.Fatal(err)
	}
	out := make([]PartialShare, len(which))
	for k, i := range which {
		p, err := g.NewElement().Mul(r, shares[i].Value).MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		out[k] = PartialShare{Index: i + 1, Point: p}
	}
	return out
}

// indexSubsets lists every k-subset of {0..n-1}.
func indexSubsets(n, k int) [][]int {
	if k == 0 {
		return [][]int{nil}
	}
	var out [][]int
	for first := 0; first <= n-k; first++ {
		for _, rest := range indexSubsets(n-first-1, k-1) {
			s := []int{first}
			for _, r := range rest {
				s = append(s, first+1+r)
			}
			out = append(out, s)
		}
	}
	return out
}

func fullKey(tb testing.TB, pub *Public, shares []secretsharing.Share) *Key {
	tb.Helper()
	k, err := combine(pub, shares)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func envelopeR(tb testing.TB, data []byte) []byte {
	tb.Helper()
	env, err := ParseEnvelope(data)
	if err != nil {
		tb.Fatal(err)
	}
	return env.Enc
}

type rfcVector struct {
	Mode        int    `json:"mode"`
	KEM         uint16 `json:"kem_id"`
	KDF         uint16 `json:"kdf_id"`
	AEAD        uint16 `json:"aead_id"`
	Info        string `json:"info"`
	SkRm        string `json:"skRm"`
	PkRm        string `json:"pkRm"`
	Enc         string `json:"enc"`
	Encryptions []struct {
		AAD string `json:"aad"`
		CT  string `json:"ct"`
		PT  string `json:"pt"`
	} `json:"encryptions"`
	Exports []struct {
		Context string `json:"exporter_context"`
		L       int    `json:"L"`
		Value   string `json:"exported_value"`
	} `json:"exports"`
	AccExports string `json:"exports_accumulated"`
}

func loadRFCVectors(t *testing.T) []rfcVector {
	t.Helper()
	data, err := os.ReadFile("testdata/rfc9180-p256.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Vectors []rfcVector }
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return doc.Vectors
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCombinePartialsRFC9180 splits each vector's recipient key, combines
// the partials for the vector's enc, and opens its ciphertexts and exports
// through crypto/hpke with the combined point in place of skRm.
func TestCombinePartialsRFC9180(t *testing.T) {
	for _, v := range loadRFCVectors(t) {
		if v.Mode != 0 || v.KEM != 0x10 || v.KDF != 1 {
			t.Fatalf("vector %d/%d/%d/%d is not DHKEM(P-256) HKDF-SHA256 base mode", v.Mode, v.KEM, v.KDF, v.AEAD)
		}
		skRm, pkRm, enc := unhex(t, v.SkRm), unhex(t, v.PkRm), unhex(t, v.Enc)
		s := g.NewScalar()
		if err := s.UnmarshalBinary(skRm); err != nil {
			t.Fatal(err)
		}
		// The DH as the standard library computes it from the whole key.
		wantDH := rfcDH(t, skRm, enc)
		for _, tn := range [][2]int{{2, 3}, {3, 5}} {
			shares := secretsharing.New(rand.Reader, uint(tn[0]-1), s).Share(uint(tn[1]))
			for _, subset := range indexSubsets(tn[1], tn[0]) {
				t.Run(fmt.Sprintf("aead=%d/%d-of-%d/%v", v.AEAD, tn[0], tn[1], subset), func(t *testing.T) {
					dh, err := CombinePartials(partialsFor(t, shares, subset, enc))
					if err != nil {
						t.Fatal(err)
					}
					checkRFCVector(t, v, pkRm, enc, dh, wantDH)
				})
			}
			t.Run(fmt.Sprintf("aead=%d/%d-of-%d/too-few", v.AEAD, tn[0], tn[1]), func(t *testing.T) {
				dh, err := CombinePartials(partialsFor(t, shares, []int{0, 1, 2}[:tn[0]-1], enc))
				if err == nil && rfcOpens(t, v, pkRm, enc, dh) {
					t.Fatalf("%d partials of a %d-of-%d key opened the vector", tn[0]-1, tn[0], tn[1])
				}
			})
		}
	}
}

func rfcDH(t *testing.T, skRm, enc []byte) []byte {
	t.Helper()
	priv, err := ecdh.P256().NewPrivateKey(skRm)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ecdh.P256().NewPublicKey(enc)
	if err != nil {
		t.Fatal(err)
	}
	x, err := priv.ECDH(peer)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func rfcRecipient(t *testing.T, v rfcVector, pkRm, enc, dh []byte) (*combinedKey, *hpke.Recipient, error) {
	t.Helper()
	ck, err := newCombinedKey(pkRm, enc, dh)
	if err != nil {
		return nil, nil, err
	}
	sk, err := hpke.NewDHKEMPrivateKey(ck)
	if err != nil {
		t.Fatal(err)
	}
	kdf, err := hpke.NewKDF(v.KDF)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := hpke.NewAEAD(v.AEAD)
	if err != nil {
		t.Fatal(err)
	}
	r, err := hpke.NewRecipient(enc, sk, kdf, aead, unhex(t, v.Info))
	return ck, r, err
}

func rfcOpens(t *testing.T, v rfcVector, pkRm, enc, dh []byte) bool {
	_, r, err := rfcRecipient(t, v, pkRm, enc, dh)
	if err != nil {
		return false
	}
	_, err = r.Open(unhex(t, v.Encryptions[0].AAD), unhex(t, v.Encryptions[0].CT))
	return err == nil
}

func checkRFCVector(t *testing.T, v rfcVector, pkRm, enc, dh, wantDH []byte) {
	t.Helper()
	if len(dh) != 65 || dh[0] != 4 {
		t.Fatalf("combined point %x is not uncompressed", dh)
	}
	ck, r, err := rfcRecipient(t, v, pkRm, enc, dh)
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := ecdh.P256().NewPublicKey(enc)
	if got, err := ck.ECDH(peer); err != nil || !bytes.Equal(got, wantDH) {
		t.Fatalf("DH %x, %v; want x(skRm·pkEm) = %x", got, err, wantDH)
	}
	for i, e := range v.Encryptions {
		pt, err := r.Open(unhex(t, e.AAD), unhex(t, e.CT))
		if err != nil || !bytes.Equal(pt, unhex(t, e.PT)) {
			t.Fatalf("encryption %d: %v, %x", i, err, pt)
		}
	}
	for i, e := range v.Exports {
		got, err := r.Export(string(unhex(t, e.Context)), e.L)
		if err != nil || !bytes.Equal(got, unhex(t, e.Value)) {
			t.Fatalf("export %d: %v, %x", i, err, got)
		}
	}
	if got := accumulatedExports(t, r); got != v.AccExports {
		t.Fatalf("accumulated exports %s, want %s", got, v.AccExports)
	}
}

// accumulatedExports follows crypto/hpke's own vector check: 1000 exports
// of lengths 0..999 for contexts drawn from SHAKE128, hashed together.
func accumulatedExports(t *testing.T, r *hpke.Recipient) string {
	source, sink := sha3.NewSHAKE128(), sha3.NewSHAKE128()
	for l := range 1000 {
		n := make([]byte, 1)
		source.Read(n)
		context := make([]byte, n[0])
		source.Read(context)
		value, err := r.Export(string(context), l)
		if err != nil {
			t.Fatal(err)
		}
		sink.Write(value)
	}
	out := make([]byte, 16)
	sink.Read(out)
	return hex.EncodeToString(out)
}

func TestOpenWithDHCombinedPartials(t *testing.T) {
	for _, tn := range [][2]int{{2, 3}, {3, 5}} {
		t.Run(fmt.Sprintf("%d-of-%d", tn[0], tn[1]), func(t *testing.T) {
			pub, shares := splitKey(t, "2026-11", tn[0], tn[1])
			msg := []byte("intercepted message")
			data, err := Seal(pub, "target-1", msg)
			if err != nil {
				t.Fatal(err)
			}
			if _, pt, err := Open(fullKey(t, pub, shares), data); err != nil || !bytes.Equal(pt, msg) {
				t.Fatalf("the share-mode baseline does not open: %v", err)
			}
			r := envelopeR(t, data)
			all := indexSubsets(tn[1], tn[1])
			for _, subset := range append(indexSubsets(tn[1], tn[0]), all...) {
				dh, err := CombinePartials(partialsFor(t, shares, subset, r))
				if err != nil {
					t.Fatalf("subset %v: %v", subset, err)
				}
				env, pt, err := OpenWithDH(pub, data, dh)
				if err != nil || !bytes.Equal(pt, msg) || env.Target != "target-1" || env.KeyID != "2026-11" {
					t.Fatalf("subset %v: %v, %q", subset, err, pt)
				}
			}
			for _, subset := range indexSubsets(tn[1], tn[0]-1) {
				if len(subset) < 2 {
					if _, err := CombinePartials(partialsFor(t, shares, subset, r)); err == nil {
						t.Fatalf("combined %d partial", len(subset))
					}
					continue
				}
				dh, err := CombinePartials(partialsFor(t, shares, subset, r))
				if err != nil {
					t.Fatalf("subset %v: %v", subset, err)
				}
				if _, _, err := OpenWithDH(pub, data, dh); !errors.Is(err, ErrEnvelope) {
					t.Fatalf("%d of %d partials: %v, want ErrEnvelope", len(subset), tn[0], err)
				}
			}
		})
	}
}

func TestCombinePartialsRefusesBadInput(t *testing.T) {
	_, shares := splitKey(t, "2026-11", 2, 3)
	r := g.RandomElement(rand.Reader)
	rb, _ := r.MarshalBinary()
	good := partialsFor(t, shares, []int{0, 1}, rb)
	compressed, _ := g.NewElement().Mul(r, shares[0].Value).MarshalBinaryCompress()
	twice, _ := g.NewElement().Dbl(r).MarshalBinary()
	with := func(i int, p PartialShare) []PartialShare {
		out := append([]PartialShare{}, good...)
		out[i] = p
		return out
	}
	for name, ps := range map[string][]PartialShare{
		"none":              nil,
		"one":               good[:1],
		"duplicate index":   with(1, PartialShare{Index: 1, Point: good[1].Point}),
		"same partial":      {good[0], good[0]},
		"duplicate of 3":    {good[0], good[0], good[1]}, // λ_2 alone would be 1
		"index 0":           with(0, PartialShare{Index: 0, Point: good[0].Point}),
		"index 256":         with(0, PartialShare{Index: MaxCustodians + 1, Point: good[0].Point}),
		"negative index":    with(0, PartialShare{Index: -1, Point: good[0].Point}),
		"compressed point":  with(0, PartialShare{Index: 1, Point: compressed}),
		"identity":          with(0, PartialShare{Index: 1, Point: []byte{0}}),
		"zero coordinates":  with(0, PartialShare{Index: 1, Point: append([]byte{4}, make([]byte, 64)...)}),
		"empty point":       with(0, PartialShare{Index: 1}),
		"trailing byte":     with(0, PartialShare{Index: 1, Point: append(bytes.Clone(good[0].Point), 0)}),
		"combines to O":     {{Index: 1, Point: rb}, {Index: 2, Point: twice}}, // λ = 2, −1
		"wrong prefix byte": with(0, PartialShare{Index: 1, Point: append([]byte{5}, good[0].Point[1:]...)}),
		"x-coordinate only": with(0, PartialShare{Index: 1, Point: good[0].Point[:33]}),
	} {
		if dh, err := CombinePartials(ps); err == nil {
			t.Errorf("%s: combined to %x", name, dh)
		}
	}
}

// TestCombinePartialsFlippedBitOrOtherEnvelope: a damaged or misdirected
// partial is refused or gives a point that does not open, never a panic.
func TestCombinePartialsFlippedBitOrOtherEnvelope(t *testing.T) {
	pub, shares := splitKey(t, "2026-11", 2, 3)
	data, _ := Seal(pub, "target-1", []byte("one"))
	other, _ := Seal(pub, "target-1", []byte("two"))
	good := partialsFor(t, shares, []int{0, 2}, envelopeR(t, data))
	refused := 0
	for bit := range 8 * len(good[1].Point) {
		ps := []PartialShare{good[0], {Index: good[1].Index, Point: bytes.Clone(good[1].Point)}}
		ps[1].Point[bit/8] ^= 1 << (bit % 8)
		dh, err := CombinePartials(ps)
		if err != nil {
			refused++
			continue
		}
		if _, _, err := OpenWithDH(pub, data, dh); !errors.Is(err, ErrEnvelope) {
			t.Fatalf("bit %d flipped: %v", bit, err)
		}
	}
	t.Logf("%d of %d flipped bits refused as points", refused, 8*len(good[1].Point))
	misdirected := partialsFor(t, shares, []int{0, 2}, envelopeR(t, other))
	swapped := []PartialShare{{Index: 3, Point: good[0].Point}, {Index: 1, Point: good[1].Point}}
	for name, ps := range map[string][]PartialShare{
		"for another envelope": misdirected,
		"one for another":      {good[0], misdirected[1]},
		"indices swapped":      swapped,
	} {
		dh, err := CombinePartials(ps)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, _, err := OpenWithDH(pub, data, dh); !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: %v, want ErrEnvelope", name, err)
		}
	}
}

func TestOpenWithDHRefuses(t *testing.T) {
	pub, shares := splitKey(t, "2026-11", 2, 3)
	data, _ := Seal(pub, "target-1", []byte("m"))
	r := envelopeR(t, data)
	dh, err := CombinePartials(partialsFor(t, shares, []int{0, 1}, r))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenWithDH(pub, data, dh); err != nil {
		t.Fatal(err)
	}
	otherID := *pub
	otherID.KeyID = "2026-12"
	otherKey, _ := splitKey(t, "2026-11", 2, 3)
	edited := bytes.Replace(data, []byte("target-1"), []byte("target-2"), 1)
	for name, c := range map[string]struct {
		pub      *Public
		data, dh []byte
	}{
		"escrow file for another key ID": {&otherID, data, dh},
		// DHKEM hashes the recipient's public key into the secret.
		"another public key":  {otherKey, data, dh},
		"edited target":       {pub, edited, dh},
		"R itself":            {pub, data, r},
		"compressed dh":       {pub, data, append([]byte{2 + dh[64]&1}, dh[1:33]...)},
		"no dh":               {pub, data, nil},
		"not an envelope":     {pub, data[:20], dh},
		"flipped ciphertext":  {pub, append(bytes.Clone(data[:len(data)-1]), data[len(data)-1]^1), dh},
		"invalid public key":  {&Public{KeyID: "2026-11", PublicKey: []byte{4, 1}}, data, dh},
		"dh off the curve":    {pub, data, append(bytes.Clone(dh[:64]), dh[64]^1)},
		"identity as dh":      {pub, data, []byte{0}},
		"zero-coordinates dh": {pub, data, append([]byte{4}, make([]byte, 64)...)},
	} {
		if _, _, err := OpenWithDH(c.pub, c.data, c.dh); !errors.Is(err, ErrEnvelope) {
			t.Errorf("%s: %v, want ErrEnvelope", name, err)
		}
	}
}

// TestCombinedKeyOnlyForItsR: the stand-in key does no DH with any other
// point, so it is useless beyond the one envelope.
func TestCombinedKeyOnlyForItsR(t *testing.T) {
	pub, shares := splitKey(t, "2026-11", 2, 2)
	data, _ := Seal(pub, "t", []byte("m"))
	r := envelopeR(t, data)
	dh, _ := CombinePartials(partialsFor(t, shares, []int{0, 1}, r))
	ck, err := newCombinedKey(pub.PublicKey, r, dh)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdh.P256().GenerateKey(rand.Reader)
	if x, err := ck.ECDH(other.PublicKey()); err == nil {
		t.Fatalf("DH with another point: %x", x)
	}
	x25519, _ := ecdh.X25519().GenerateKey(rand.Reader)
	if _, err := ck.ECDH(x25519.PublicKey()); err == nil {
		t.Fatal("DH with an X25519 point")
	}
	if !bytes.Equal(ck.PublicKey().Bytes(), pub.PublicKey) {
		t.Fatal("the stand-in key does not present the escrow public key")
	}
}

func FuzzCombinePartials(f *testing.F) {
	_, shares := splitKey(f, "2026-11", 2, 3)
	r, _ := g.RandomElement(rand.Reader).MarshalBinary()
	ps := partialsFor(f, shares, []int{0, 2}, r)
	f.Add(ps[0].Index, ps[0].Point, ps[1].Index, ps[1].Point)
	f.Add(1, ps[0].Point, 1, ps[0].Point)
	f.Add(2, []byte{0}, 256, []byte{2})
	f.Add(1, r[:33], 2, r)
	f.Fuzz(func(t *testing.T, i1 int, p1 []byte, i2 int, p2 []byte) {
		dh, err := CombinePartials([]PartialShare{{i1, p1}, {i2, p2}})
		if err != nil {
			return
		}
		if i1 == i2 || i1 < 1 || i2 < 1 || i1 > MaxCustodians || i2 > MaxCustodians {
			t.Fatalf("combined indices %d and %d", i1, i2)
		}
		for _, p := range [][]byte{p1, p2, dh} {
			if _, err := ecdh.P256().NewPublicKey(p); err != nil || len(p) != 65 {
				t.Fatalf("accepted or produced %x: %v", p, err)
			}
		}
	})
}

// BenchmarkCombine measures what the agency does per envelope in scoped
// mode: combine t partials and open. BenchmarkOpenWithKey is the same
// envelope opened with the whole recovered key, as in share mode.
func BenchmarkCombine(b *testing.B) {
	for _, t := range []int{2, 5, 20} {
		pub, shares := splitKey(b, "2026-11", t, t)
		data, err := Seal(pub, "target-1", make([]byte, 256))
		if err != nil {
			b.Fatal(err)
		}
		ps := partialsFor(b, shares, indexSubsets(t, t)[0], envelopeR(b, data))
		b.Run(fmt.Sprintf("t=%d", t), func(b *testing.B) {
			for b.Loop() {
				dh, err := CombinePartials(ps)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := OpenWithDH(pub, data, dh); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpenWithKey(b *testing.B) {
	pub, shares := splitKey(b, "2026-11", 2, 2)
	data, err := Seal(pub, "target-1", make([]byte, 256))
	if err != nil {
		b.Fatal(err)
	}
	k := fullKey(b, pub, shares)
	for b.Loop() {
		if _, _, err := Open(k, data); err != nil {
			b.Fatal(err)
		}
	}
}
