package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/cloudflare/circl/secretsharing"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/internal/p256"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// rsaKeys are RSA-2048 keys made once for every benchmark that needs
// them: making one takes longer than a ceremony's work per custodian.
var rsaKeys []*rsa.PrivateKey

func rsaKey(b *testing.B, i int) *rsa.PrivateKey {
	for len(rsaKeys) <= i {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		rsaKeys = append(rsaKeys, key)
	}
	return rsaKeys[i]
}

// benchMembers makes n custodians with RSA-2048 EKs and import keys that
// belong to no TPM.
func benchMembers(b *testing.B, n int) []Member {
	b.Helper()
	ms := make([]Member, n)
	for i := range ms {
		ek, err := tpm.NewEK(&rsaKey(b, 2*i).PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		ik, err := tpm.NewImportKey(&rsaKey(b, 2*i+1).PublicKey)
		if err != nil {
			b.Fatal(err)
		}
		ms[i] = Member{ID: fmt.Sprintf("court-%d", i), EK: ek, ImportKey: ik}
	}
	return ms
}

var benchPCRs = tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32), 9: bytes.Repeat([]byte{2}, 32)}

// BenchmarkCeremony measures a whole share-mode ceremony (split, commit,
// seal to each import key) beside its floors: circl's split and commit
// alone (circl-floor), and those plus one RSA-OAEP encryption of a
// SHA-256-sized seed to each custodian's import key, what sealing to a TPM
// cannot do without (floor). ratio runs the ceremony and the floor in
// turn, each warmed once first, and reports the ceremony as a multiple of
// the floor (x-floor). The two swap places every iteration: whichever runs
// second inherits the first one's garbage to collect, and on a shared
// machine a burst of load then falls on both alike.
func BenchmarkCeremony(b *testing.B) {
	for _, n := range []int{5, 20, 100} {
		t := n/2 + 1
		ceremony := func(b *testing.B, ms []Member) {
			if _, _, err := Ceremony("2026-11", t, benchPCRs, ms, WithMode(ModeShare)); err != nil {
				b.Fatal(err)
			}
		}
		circl := func() {
			ss := secretsharing.New(rand.Reader, uint(t-1), g.RandomScalar(rand.Reader))
			_ = ss.Share(uint(n))
			_ = ss.CommitSecret()
		}
		floor := func(b *testing.B) {
			circl()
			for i := range n {
				seed := make([]byte, sha256.Size) // what go-tpm encapsulates
				if _, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &rsaKey(b, 2*i+1).PublicKey, seed, []byte("DUPLICATE\x00")); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.Run(fmt.Sprintf("ceremony/n=%d", n), func(b *testing.B) {
			ms := benchMembers(b, n)
			for b.Loop() {
				ceremony(b, ms)
			}
		})
		b.Run(fmt.Sprintf("circl-floor/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				circl()
			}
		})
		b.Run(fmt.Sprintf("floor/n=%d", n), func(b *testing.B) {
			benchMembers(b, n)
			for b.Loop() {
				floor(b)
			}
		})
		b.Run(fmt.Sprintf("ratio/n=%d", n), func(b *testing.B) {
			ms := benchMembers(b, n)
			ceremony(b, ms) // the first seal encodes the policy's areas once
			floor(b)
			// spent[0] is the ceremony's time, spent[1] the floor's.
			runs := [2]func(){func() { ceremony(b, ms) }, func() { floor(b) }}
			var spent [2]time.Duration
			for i := 0; b.Loop(); i++ {
				for k := range runs {
					j := (i + k) % 2 // the ceremony first in even iterations
					t0 := time.Now()
					runs[j]()
					spent[j] += time.Since(t0)
				}
			}
			cer, fl := spent[0], spent[1]
			b.ReportMetric(float64(cer)/float64(b.N), "ns-ceremony")
			b.ReportMetric(float64(fl)/float64(b.N), "ns-floor")
			b.ReportMetric(float64(cer)/float64(fl), "x-floor")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkRecover measures recovery from threshold release packages
// (HPKE open, Feldman check of each share, interpolation, public key
// check) beside circl's Verify and Recover alone (circl-floor) and beside
// the floor: the HPKE opens of the packages, then circl's Verify and
// Recover. ratio runs a recovery and the floor in turn and reports the
// recovery as a multiple of the floor (x-floor).
func BenchmarkRecover(b *testing.B) {
	agency, err := recipient.Generate("")
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("warrant"))
	for _, t := range []int{3, 20} {
		n := t
		secret := g.RandomScalar(rand.Reader)
		ss := secretsharing.New(rand.Reader, uint(t-1), secret)
		shares := ss.Share(uint(n))
		pub := &Public{Version: Version, KeyID: "2026-11", Mode: ModeShare, Threshold: t, PCRs: benchPCRs, SecurityVersion: 1}
		for _, c := range ss.CommitSecret() {
			data, _ := c.MarshalBinary()
			pub.Commitments = append(pub.Commitments, data)
		}
		pub.PublicKey = pub.Commitments[0]
		var releases []*Release
		for i, s := range shares {
			id := fmt.Sprintf("court-%d", i)
			pub.Custodians = append(pub.Custodians, Custodian{ID: id, Index: i + 1, EKName: []byte(id), ImportKeyName: []byte(id)})
			value, _ := s.Value.MarshalBinary()
			r, err := SealShare(agency.Public(), digest[:], id, "2026-11", i+1, value)
			if err != nil {
				b.Fatal(err)
			}
			releases = append(releases, r)
		}
		b.Run(fmt.Sprintf("recover/t=%d", t), func(b *testing.B) {
			for b.Loop() {
				if _, err := Recover(agency, pub, releases); err != nil {
					b.Fatal(err)
				}
			}
		})
		commit := ss.CommitSecret()
		circl := func(b *testing.B, shares []secretsharing.Share) {
			for _, s := range shares {
				if !secretsharing.Verify(uint(t-1), s, commit) {
					b.Fatal("share does not verify")
				}
			}
			if _, err := secretsharing.Recover(uint(t-1), shares); err != nil {
				b.Fatal(err)
			}
		}
		// floor opens each package with HPKE, then runs circl's Verify and
		// Recover on what it opened.
		floor := func(b *testing.B) {
			opened := make([]secretsharing.Share, len(releases))
			for i, r := range releases {
				value, err := agency.Open(ShareInfo(r.WarrantDigest, r.CustodianID, r.KeyID, r.Index), r.SealedShare)
				if err != nil {
					b.Fatal(err)
				}
				opened[i] = secretsharing.Share{ID: shares[i].ID, Value: g.NewScalar()}
				if err := opened[i].Value.UnmarshalBinary(value); err != nil {
					b.Fatal(err)
				}
			}
			circl(b, opened)
		}
		b.Run(fmt.Sprintf("circl-floor/t=%d", t), func(b *testing.B) {
			for b.Loop() {
				circl(b, shares)
			}
		})
		b.Run(fmt.Sprintf("floor/t=%d", t), func(b *testing.B) {
			for b.Loop() {
				floor(b)
			}
		})
		b.Run(fmt.Sprintf("ratio/t=%d", t), func(b *testing.B) {
			var rec, fl time.Duration
			for b.Loop() {
				t0 := time.Now()
				if _, err := Recover(agency, pub, releases); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				floor(b)
				rec += t1.Sub(t0)
				fl += time.Since(t1)
			}
			b.ReportMetric(float64(rec)/float64(b.N), "ns-recover")
			b.ReportMetric(float64(fl)/float64(b.N), "ns-floor")
			b.ReportMetric(float64(rec)/float64(fl), "x-floor")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// benchKey splits a fresh escrow key t-of-n and returns its escrow file in
// the given mode (with proof keys in scoped mode) and the share values.
// Its custodians are court-0, court-1, … with indices 1, 2, ….
func benchKey(tb testing.TB, mode string, t, n int) (*Public, [][]byte) {
	tb.Helper()
	ss := secretsharing.New(rand.Reader, uint(t-1), g.RandomScalar(rand.Reader))
	pub := &Public{Version: Version, KeyID: "2026-11", Mode: mode, Threshold: t, PCRs: benchPCRs, SecurityVersion: 1}
	for _, c := range ss.CommitSecret() {
		data, _ := c.MarshalBinary()
		pub.Commitments = append(pub.Commitments, data)
	}
	pub.PublicKey = pub.Commitments[0]
	var values [][]byte
	for i, s := range ss.Share(uint(n)) {
		value, _ := s.Value.MarshalBinary()
		c := Custodian{ID: fmt.Sprintf("court-%d", i), Index: i + 1, EKName: []byte{byte(i)}, ImportKeyName: []byte{byte(i)}}
		if mode == ModeScoped {
			pk, err := tpm.ProofKey(value)
			if err != nil {
				tb.Fatal(err)
			}
			c.ProofKey = pk
		}
		pub.Custodians = append(pub.Custodians, c)
		values = append(values, value)
	}
	if err := pub.check(); err != nil {
		tb.Fatal(err)
	}
	return pub, values
}

// BenchmarkAgencyOpen measures what the agency does to open one envelope:
// in scoped mode, open t packages, check t proofs, combine and decrypt
// ("scoped"), and the proofs, combination and decryption alone
// ("verify-combine"); in share mode, in the same run, recover the key from
// t packages and decrypt ("share").
func BenchmarkAgencyOpen(b *testing.B) {
	agency, err := recipient.Generate("")
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("warrant"))
	for _, t := range []int{2, 5, 20} {
		pub, values := benchKey(b, ModeScoped, t, t)
		envelope, err := Seal(pub, "alice", []byte("message"))
		if err != nil {
			b.Fatal(err)
		}
		env, _ := ParseEnvelope(envelope)
		var releases []*Release
		var batches []*tpm.Batch
		for i, v := range values {
			batch := tpmtest.SoftwareBatch(b, v, [][]byte{env.Enc}, nil)
			batches = append(batches, batch)
			sealed, err := NewPartialsBatch([][]byte{env.Enc}, batch)
			if err != nil {
				b.Fatal(err)
			}
			r, err := SealPartials(agency.Public(), digest[:], pub.Custodians[i].ID, pub.KeyID, i+1, sealed)
			if err != nil {
				b.Fatal(err)
			}
			releases = append(releases, r)
		}
		b.Run(fmt.Sprintf("scoped/t=%d", t), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := OpenScoped(agency, pub, releases, envelope); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("verify-combine/t=%d", t), func(b *testing.B) {
			for b.Loop() {
				var good []PartialShare
				for i, batch := range batches {
					if err := tpm.VerifyBatch(pub.Custodians[i].ProofKey, [][]byte{env.Enc}, batch); err != nil {
						b.Fatal(err)
					}
					good = append(good, PartialShare{Index: i + 1, Point: batch.Partials[0]})
				}
				dh, err := CombinePartials(good)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := OpenWithDH(pub, envelope, dh); err != nil {
					b.Fatal(err)
				}
			}
		})
		sharePub, shareValues := benchKey(b, ModeShare, t, t)
		shareEnvelope, _ := Seal(sharePub, "alice", []byte("message"))
		var shareReleases []*Release
		for i, v := range shareValues {
			r, err := SealShare(agency.Public(), digest[:], sharePub.Custodians[i].ID, sharePub.KeyID, i+1, v)
			if err != nil {
				b.Fatal(err)
			}
			shareReleases = append(shareReleases, r)
		}
		b.Run(fmt.Sprintf("share/t=%d", t), func(b *testing.B) {
			for b.Loop() {
				key, err := Recover(agency, sharePub, shareReleases)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := Open(key, shareEnvelope); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealProof measures the seal proof made and checked alone, and
// sealing and parsing a 1 KiB envelope whole (HPKE, digest and proof),
// each against a bare P-256 scalar multiplication (crypto/ecdh) run
// between its iterations: "op-ns" is the operation alone and
// "scalar-mults" its cost in scalar multiplications, measured under the
// same load (ns/op counts both).
func BenchmarkSealProof(b *testing.B) {
	_, pub := testKey(b, "2026-11")
	data, err := Seal(pub, "alice@example.org", make([]byte, 1024))
	if err != nil {
		b.Fatal(err)
	}
	env, err := ParseEnvelope(data)
	if err != nil {
		b.Fatal(err)
	}
	st := &sealStatement{keyID: env.KeyID, target: env.Target, digest: env.CiphertextSHA256(), enc: env.Enc}
	eph, _ := ecdh.P256().GenerateKey(rand.Reader)
	r := eph.Bytes()
	st.enc = eph.PublicKey().Bytes()
	proof, err := proveSeal(st, r)
	if err != nil {
		b.Fatal(err)
	}
	priv, _ := ecdh.P256().GenerateKey(rand.Reader)
	peer, _ := ecdh.P256().NewPublicKey(env.Enc)
	kem, kdf, aead := envelopeSuite()
	hpkePub, err := kem.NewPublicKey(pub.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		op   func() error
	}{
		{"prove", func() error { _, err := proveSeal(st, r); return err }},
		{"verify", func() error { return verifySeal(st, proof) }},
		{"seal/1KiB", func() error { _, err := Seal(pub, "alice@example.org", make([]byte, 1024)); return err }},
		// What sealing cost before seal proofs: crypto/hpke alone.
		{"hpke-seal/1KiB", func() error {
			_, err := hpke.Seal(hpkePub, kdf, aead, envelopeInfo(pub.KeyID, "alice@example.org"), make([]byte, 1024))
			return err
		}},
		{"parse/1KiB", func() error { _, err := ParseEnvelope(data); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			var opTime, multTime time.Duration
			n := 0
			for b.Loop() {
				t0 := time.Now()
				if err := c.op(); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := priv.ECDH(peer); err != nil {
					b.Fatal(err)
				}
				opTime, multTime, n = opTime+t1.Sub(t0), multTime+time.Since(t1), n+1
			}
			b.ReportMetric(float64(opTime.Nanoseconds())/float64(n), "op-ns")
			b.ReportMetric(float64(opTime)/float64(multTime), "scalar-mults")
		})
	}
}

// BenchmarkAgencyOpenBatch opens 10,000 envelopes of a 3-of-3 scoped key
// ID on every CPU and, in the same run, the floor for them on the same
// CPUs: per envelope, t scalar multiplications (the partials times their
// coefficients) and one HPKE open from the combined point. "full" is
// everything the agency does: NewScopedOpener (open the t packages, check
// each one's batch proof, once) and OpenBatch with ScopedOpener.Open (the
// seal proof, the combination and the open); "batch-proofs" is
// NewScopedOpener alone; "seal-proofs" parses the envelopes (their seal
// proofs checked), and "combine-open" is what follows the proofs, on
// partials already checked. The per-envelope parts run 200 envelopes at a
// time, each 200 followed by their floor; the whole-run parts run once,
// followed by the floor of every envelope, so both see the same load on a
// shared machine. "envelope-ns" is the measured operation per envelope,
// "floor-ns" the floor's, "x-floor" their ratio.
func BenchmarkAgencyOpenBatch(b *testing.B) {
	const count, t = 10_000, 3
	f := newBatchFixture(b, t, t, count)
	var releases []*Release
	for i := 1; i <= t; i++ {
		releases = append(releases, f.release(b, i, nil))
	}
	o := f.opener(b, releases...)
	envs := make([]*Envelope, count)
	good := make([][]PartialShare, count)
	points := make([][]*p256.Point, count)
	dhs := make([][]byte, count)
	parallelFor(b, count, func(i int) error {
		var err error
		if envs[i], err = ParseEnvelope(f.envelopes[i]); err != nil {
			return err
		}
		for _, rp := range o.releases {
			p, err := rp.verifiedPartial(envs[i].Enc)
			if err != nil {
				return err
			}
			good[i] = append(good[i], PartialShare{Index: rp.custodian.Index, Point: p})
		}
		_, points[i], err = parsePartials(good[i])
		if err == nil {
			dhs[i], err = CombinePartials(good[i])
		}
		return err
	})
	xs, _, err := parsePartials(good[0]) // every envelope: the same custodians
	if err != nil {
		b.Fatal(err)
	}
	lambdas := lagrangeAtZero(xs)
	floor := func(i int) error {
		for k, p := range points[i] {
			if _, err := p256.Mul(p, lambdas[k]); err != nil {
				return err
			}
		}
		_, _, err := openWithDH(f.pub, envs[i], dhs[i])
		return err
	}
	// Each runs over envelopes lo..hi-1.
	each := func(fn func(i int) error) func(lo, hi int) {
		return func(lo, hi int) { parallelFor(b, hi-lo, func(i int) error { return fn(lo + i) }) }
	}
	newOpener := func() *ScopedOpener {
		o := f.opener(b, releases...)
		if pe := o.PackageErrors(); pe != nil {
			b.Fatal(pe)
		}
		return o
	}
	for _, c := range []struct {
		name  string
		whole bool // one run over every envelope, not 200 at a time
		run   func(lo, hi int)
	}{
		{"full", true, func(lo, hi int) {
			OpenBatch(newOpener(), Batch{
				Count: hi - lo,
				Read:  func(i int) ([]byte, error) { return f.envelopes[lo+i], nil },
				Keep:  func(int, *Envelope, []byte) error { return nil },
				Done: func(out Outcome) {
					if out.Err != nil || out.Bad != nil {
						b.Fatal(out.Err, out.Bad)
					}
				},
			}, 0)
		}},
		{"batch-proofs", true, func(int, int) { newOpener() }},
		{"seal-proofs", true, func(lo, hi int) {
			// What OpenBatch's proof pass does: decode each, check all.
			refs := make([]warrant.EnvelopeRef, hi-lo)
			each(func(i int) error {
				env, err := DecodeEnvelope(f.envelopes[i])
				if err == nil {
					refs[i-lo] = env.Ref()
				}
				return err
			})(lo, hi)
			if errs := CheckSealProofs(refs); errs != nil {
				b.Fatal(errs)
			}
		}},
		{"combine-open", false, each(func(i int) error { _, _, err := o.combineAndOpen(envs[i], good[i]); return err })},
	} {
		b.Run(fmt.Sprintf("%s/n=%d/t=%d", c.name, count, t), func(b *testing.B) {
			chunk := 200
			if c.whole {
				chunk = count
			}
			var opTime, floorTime time.Duration
			for b.Loop() {
				for lo := 0; lo < count; lo += chunk {
					hi := min(lo+chunk, count)
					t0 := time.Now()
					c.run(lo, hi)
					t1 := time.Now()
					each(floor)(lo, hi)
					opTime, floorTime = opTime+t1.Sub(t0), floorTime+time.Since(t1)
				}
			}
			b.ReportMetric(float64(opTime.Nanoseconds())/float64(b.N*count), "envelope-ns")
			b.ReportMetric(float64(floorTime.Nanoseconds())/float64(b.N*count), "floor-ns")
			b.ReportMetric(float64(opTime)/float64(floorTime), "x-floor")
		})
	}
}

// BenchmarkSealProofBatch checks the seal proofs of 10,000 version 3
// envelopes (their references, as a warrant names them) three ways in
// turn, so that each sees the same load: "per-envelope", each proof on its
// own, one after another; "parallel", each on its own on every CPU (how
// version 2 proofs are checked); and "batch", CheckSealProofs: one random
// linear combination per CPU. Each reports nanoseconds per envelope, and
// the last two their ratio to per-envelope; "batch-vs-parallel-x" compares
// the two that use every CPU.
func BenchmarkSealProofBatch(b *testing.B) {
	const count = 10_000
	_, pub := testKey(b, "2026-11")
	refs := make([]warrant.EnvelopeRef, count)
	parallelFor(b, count, func(i int) error {
		data, err := Seal(pub, "alice@example.org", []byte("m"))
		if err != nil {
			return err
		}
		env, err := ParseEnvelope(data)
		if err == nil {
			refs[i] = env.Ref()
		}
		return err
	})
	check := func(i int) error {
		r := refs[i]
		return CheckSealProof(r.KeyID, r.Target, r.Enc, r.CiphertextSHA256, r.Proof)
	}
	ways := []struct {
		name string
		run  func()
	}{
		{"per-envelope", func() {
			for i := range count {
				if err := check(i); err != nil {
					b.Fatal(err)
				}
			}
		}},
		{"parallel", func() { parallelFor(b, count, check) }},
		{"batch", func() {
			if errs := CheckSealProofs(refs); errs != nil {
				b.Fatal(errs)
			}
		}},
	}
	spent := make([]time.Duration, len(ways))
	for b.Loop() {
		for k, way := range ways {
			t0 := time.Now()
			way.run()
			spent[k] += time.Since(t0)
		}
	}
	for k, way := range ways {
		b.ReportMetric(float64(spent[k].Nanoseconds())/float64(b.N*count), way.name+"-ns")
		if k > 0 {
			b.ReportMetric(float64(spent[k])/float64(spent[0]), way.name+"-x")
		}
	}
	b.ReportMetric(float64(spent[2])/float64(spent[1]), "batch-vs-parallel-x")
}
