package escrow_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// scopedFleet runs a 2-of-3 scoped ceremony on three swtpm custodians and
// provisions every bundle.
func scopedFleet(t *testing.T) ([]*custodian, *escrow.Public, []*escrow.Bundle) {
	t.Helper()
	cs, pcrs := fleet(t, 3)
	pub, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, members(cs), escrow.WithMode(escrow.ModeScoped))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := pub.Marshal()
	if pub, err = escrow.ParsePublic(data); err != nil {
		t.Fatal(err)
	}
	bundles = reparseBundles(t, bundles)
	for i, b := range bundles {
		if err := escrow.Provision(cs[i].conn, b, cs[i].id, cs[i].importKey); err != nil {
			t.Fatalf("provisioning %s: %v", cs[i].id, err)
		}
	}
	return cs, pub, bundles
}

// releasePartials does what an appliance does for an approved warrant
// naming envelopes: the TPM computes each partial and proves them all at
// once, and the batch is sealed to the agency.
func releasePartials(t testing.TB, c *custodian, b *escrow.Bundle, to *recipient.PublicKey, envelopes ...[]byte) *escrow.Release {
	t.Helper()
	key, err := tpm.ParseScopedKey(b.Blob)
	if err != nil {
		t.Fatal(err)
	}
	var points [][]byte
	for _, e := range envelopes {
		env, err := escrow.ParseEnvelope(e)
		if err != nil {
			t.Fatal(err)
		}
		points = append(points, env.Enc)
	}
	batch, err := tpm.PartialsBatch(c.conn, key, points, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := sealBatch(t, c, b, to, points, batch)
	data, _ := r.Marshal()
	if r, err = escrow.ParseRelease(data); err != nil {
		t.Fatal(err)
	}
	return r
}

func agency(t testing.TB) *recipient.Identity {
	t.Helper()
	id, err := recipient.Generate(recipient.DefaultKEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func seal(t testing.TB, pub *escrow.Public, target, msg string) []byte {
	t.Helper()
	env, err := escrow.Seal(pub, target, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestScopedReleaseOpensOnlyTheNamedEnvelope: releases naming envelope A
// open A; envelope B of the same key ID and target stays closed.
func TestScopedReleaseOpensOnlyTheNamedEnvelope(t *testing.T) {
	cs, pub, bundles := scopedFleet(t)
	id := agency(t)
	a := seal(t, pub, "alice@example.org", "message A")
	b := seal(t, pub, "alice@example.org", "message B")
	releases := []*escrow.Release{
		releasePartials(t, cs[0], bundles[0], id.Public(), a),
		releasePartials(t, cs[2], bundles[2], id.Public(), a),
	}
	_, pt, err := escrow.OpenScoped(id, pub, releases, a)
	if err != nil || string(pt) != "message A" {
		t.Fatalf("envelope A: %q, %v", pt, err)
	}
	_, pt, err = escrow.OpenScoped(id, pub, releases, b)
	var bad *escrow.BadShareError
	if !errors.Is(err, escrow.ErrNotEnoughShares) || !errors.As(err, &bad) || len(bad.Custodians) != 2 || pt != nil {
		t.Fatalf("envelope B opened or failed for another reason: %q, %v", pt, err)
	}
	if _, err := escrow.Recover(id, pub, releases); err == nil {
		t.Fatal("Recover rebuilt a key from scoped releases")
	}
}

// TestScopedWrongPartialIsNamed: a custodian whose partial is altered is
// named, and the envelope still opens from the honest ones.
func TestScopedWrongPartialIsNamed(t *testing.T) {
	cs, pub, bundles := scopedFleet(t)
	id := agency(t)
	env := seal(t, pub, "bob", "hello")
	honest := releasePartials(t, cs[0], bundles[0], id.Public(), env)
	alsoHonest := releasePartials(t, cs[2], bundles[2], id.Public(), env)
	liar := lyingRelease(t, cs[1], bundles[1], id, env)
	_, pt, err := escrow.OpenScoped(id, pub, []*escrow.Release{honest, liar, alsoHonest}, env)
	var bad *escrow.BadShareError
	if string(pt) != "hello" || !errors.As(err, &bad) || len(bad.Custodians) != 1 || bad.Custodians[cs[1].id] == "" {
		t.Fatalf("got %q, %v; want the plaintext and %s named", pt, err, cs[1].id)
	}
	if _, _, err := escrow.OpenScoped(id, pub, []*escrow.Release{honest, liar}, env); !errors.Is(err, escrow.ErrNotEnoughShares) {
		t.Fatalf("one honest partial and a liar: %v", err)
	}
}

// sealBatch seals c's batch of partials of points to the agency.
func sealBatch(t testing.TB, c *custodian, b *escrow.Bundle, to *recipient.PublicKey, points [][]byte, batch *tpm.Batch) *escrow.Release {
	t.Helper()
	sealed, err := escrow.NewPartialsBatch(points, batch)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("warrant"))
	r, err := escrow.SealPartials(to, digest[:], c.id, b.Escrow.KeyID, b.Index, sealed)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// lyingRelease is c's release with its partial replaced by the partial of
// another envelope, keeping the TPM's proof.
func lyingRelease(t *testing.T, c *custodian, b *escrow.Bundle, id *recipient.Identity, envelope []byte) *escrow.Release {
	t.Helper()
	key, err := tpm.ParseScopedKey(b.Blob)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := escrow.ParseEnvelope(envelope)
	other := seal(t, &b.Escrow, "bob", "other")
	otherEnv, _ := escrow.ParseEnvelope(other)
	batch, err := tpm.PartialsBatch(c.conn, key, [][]byte{env.Enc}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherBatch, err := tpm.PartialsBatch(c.conn, key, [][]byte{otherEnv.Enc}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	batch.Partials[0] = otherBatch.Partials[0]
	return sealBatch(t, c, b, id.Public(), [][]byte{env.Enc}, batch)
}

// TestScopedKeyRefusesMisuse: a scoped bundle is refused on another TPM,
// does not work after a PCR change, cannot be resealed on the device, and
// its releases are not share releases.
func TestScopedKeyRefusesMisuse(t *testing.T) {
	cs, pub, bundles := scopedFleet(t)
	if err := escrow.Provision(cs[1].conn, bundles[0], cs[0].id, cs[1].importKey); !errors.Is(err, escrow.ErrOtherTPM) {
		t.Fatalf("bundle on another TPM: %v", err)
	}
	if _, err := escrow.Reseal(cs[0].conn, bundles[0], []byte("any update")); !errors.Is(err, escrow.ErrScopedReseal) {
		t.Fatalf("reseal of a scoped bundle: %v", err)
	}
	boot(t, cs[0].conn, "another image")
	if err := escrow.Provision(cs[0].conn, bundles[0], cs[0].id, cs[0].importKey); !errors.Is(err, tpm.ErrPCRMismatch) {
		t.Fatalf("after a PCR change: %v", err)
	}
	for _, c := range pub.Custodians {
		if len(c.ProofKey) != 65 {
			t.Fatalf("custodian %s has no proof key", c.ID)
		}
	}
	if bytes.Contains(bundles[0].Blob, []byte("CUSTSEAL")) {
		t.Fatal("a scoped bundle holds a sealed-data blob")
	}
}

// TestInvariantScopedShareNeverOnTPMBus: over a scoped key's whole life —
// ceremony, provisioning, release — a probe on each custodian's TPM bus
// sees no command or response holding its share, and every ECDH_ZGen asks
// for response encryption.
func TestInvariantScopedShareNeverOnTPMBus(t *testing.T) {
	cs, pcrs := fleet(t, 3)
	buses := make([]*tpmtest.Recorder, len(cs))
	for i, c := range cs {
		buses[i] = &tpmtest.Recorder{TPM: c.conn}
		c.conn = buses[i]
	}
	shares := map[int][]byte{}
	stop := escrow.ObserveShares(func(index int, value []byte) { shares[index] = bytes.Clone(value) })
	pub, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, members(cs), escrow.WithMode(escrow.ModeScoped))
	stop()
	if err != nil {
		t.Fatal(err)
	}
	id := agency(t)
	env := seal(t, pub, "carol", "message")
	for i, b := range bundles {
		if err := escrow.Provision(cs[i].conn, b, cs[i].id, cs[i].importKey); err != nil {
			t.Fatal(err)
		}
		releasePartials(t, cs[i], b, id.Public(), env)
	}
	if len(shares) != 3 {
		t.Fatalf("observed %d shares, want 3", len(shares))
	}
	for i, bus := range buses {
		share := shares[bundles[i].Index]
		if bus.Count() == 0 || bus.Seen(share) || bus.Seen(share[:16]) || bus.Seen(share[16:]) {
			t.Errorf("%s: the share (or half of it) crossed the TPM bus, or nothing was recorded", cs[i].id)
		}
		// One ZGen at provisioning (of G), one for the envelope.
		if n, inClear := bus.EncryptedResponses(tpm2.TPMCCECDHZGen, 1); n != 2 || inClear != 0 {
			t.Errorf("%s: %d ECDH_ZGen, %d without response encryption; want 2 and 0", cs[i].id, n, inClear)
		}
	}
}

// TestUpdateKeysAndApprovalsAreStrict: the approval key in update.pub is
// signed by the update key; a scoped ceremony refuses an update key without
// one; an approval rides only on a scoped bundle whose escrow file names an
// approval key.
func TestUpdateKeysAndApprovalsAreStrict(t *testing.T) {
	private, public, err := escrow.NewUpdateKey("authority")
	if err != nil {
		t.Fatal(err)
	}
	verifier, approvalKey, err := escrow.ParseUpdatePublic(public)
	if err != nil || approvalKey == nil {
		t.Fatalf("update.pub: %v", err)
	}
	_, otherPublic, _ := escrow.NewUpdateKey("authority")
	_, rest, _ := strings.Cut(otherPublic, "\n")
	if _, _, err := escrow.ParseUpdatePublic(verifier + "\n" + rest); err == nil {
		t.Fatal("an approval key signed by another update key was accepted")
	}
	ms := []escrow.Member{{ID: "court-a", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}}
	pcrs := tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}
	if _, _, err := escrow.Ceremony("2026-11", 2, pcrs, ms, escrow.WithUpdateKey(verifier, nil)); !errors.Is(err, escrow.ErrNoApprovalKey) {
		t.Fatalf("scoped ceremony with an update key lacking an approval key: %v", err)
	}

	newPCRs := tpm.PCRValues{8: bytes.Repeat([]byte{2}, 32)}
	policy, _ := bootpolicy.FromMeasurement("court-a", newPCRs, 1)
	update, err := escrow.SignUpdate(private, policy)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{escrow.ModeShare, escrow.ModeScoped} {
		_, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, ms, escrow.WithMode(mode), escrow.WithUpdateKey(verifier, approvalKey))
		if err != nil {
			t.Fatal(err)
		}
		b := *bundles[0]
		b.Escrow.PCRs, b.Update, b.Approval = newPCRs, update, []byte("junk")
		data, _ := b.Marshal()
		if _, err := escrow.ParseBundle(data); err == nil {
			t.Errorf("%s: a bundle with an approval that is not its update's was accepted", mode)
		}
		b.Approval = nil
		if mode == escrow.ModeShare {
			// The blob is still sealed to the old PCRs: not this update's bundle.
			data, _ = b.Marshal()
			if _, err := escrow.ParseBundle(data); err == nil {
				t.Error("share: a bundle whose blob is not sealed to its PCRs was accepted")
			}
			continue
		}
		next, err := escrow.Reseal(nil, bundles[0], update)
		if err != nil {
			t.Fatalf("approving a scoped bundle: %v", err)
		}
		data, _ = next.Marshal()
		if _, err := escrow.ParseBundle(data); err != nil {
			t.Fatalf("the approved scoped bundle: %v", err)
		}
	}
}

// TestInvariantNoDowngradeBundlesAndUpdatesKeepTheirVersion: a bundle
// whose escrow file claims another security version than its sealed key
// or its update is refused, and no update moves a share to an image of a
// lower security version.
func TestInvariantNoDowngradeBundlesAndUpdatesKeepTheirVersion(t *testing.T) {
	private, public, _ := escrow.NewUpdateKey("authority")
	verifier, approvalKey, _ := escrow.ParseUpdatePublic(public)
	ms := []escrow.Member{{ID: "court-a", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}}
	pcrs := tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}
	older, _ := bootpolicy.FromMeasurement("court-a", tpm.PCRValues{8: bytes.Repeat([]byte{2}, 32)}, 1)
	update, err := escrow.SignUpdate(private, older)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{escrow.ModeShare, escrow.ModeScoped} {
		_, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, ms, escrow.WithMode(mode),
			escrow.WithUpdateKey(verifier, approvalKey), escrow.WithSecurityVersion(2))
		if err != nil {
			t.Fatal(err)
		}
		b := *bundles[0]
		b.Escrow.SecurityVersion = 3
		data, _ := b.Marshal()
		if _, err := escrow.ParseBundle(data); err == nil {
			t.Errorf("%s: a bundle claiming another security version than its key was accepted", mode)
		}
		// Refused before any TPM command (there is no TPM here).
		if _, err := escrow.Reseal(nil, bundles[0], update); !errors.Is(err, escrow.ErrOlderUpdate) || !errors.Is(err, escrow.ErrBadUpdate) {
			t.Errorf("%s: an update back to version 1: %v", mode, err)
		}
	}
	if _, _, err := escrow.Ceremony("2026-11", 2, pcrs, ms, escrow.WithSecurityVersion(0)); err == nil {
		t.Error("a ceremony for security version 0 was accepted")
	}
}
