package escrow

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"filippo.io/torchwood"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/witness"
)

// witnessedPackage is a package of custodian court-a for key ID 2026-11
// whose one-entry ledger checkpoint is signed by the custodian's key and
// cosigned by the first cosigners of ws (torchwood's cosignature/v1).
func witnessedPackage(t *testing.T, origin string, e ledger.Entry, ws []*torchwood.CosignatureSigner, cosigners int) *Release {
	t.Helper()
	entry, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	leaf := tlog.RecordHash(entry)
	cp := log.Checkpoint{Origin: origin, Size: 1, Hash: leaf[:]}
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	logSigner, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	signers := []note.Signer{logSigner}
	for _, w := range ws[:cosigners] {
		signers = append(signers, w)
	}
	signed, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return &Release{CustodianID: "court-a", KeyID: "2026-11",
		Ledger: &ledger.Inclusion{Index: 0, Entry: string(entry), Checkpoint: string(signed)}}
}

// TestInvariantAgencyChecksWhatTheWitnessesCosigned: with a witness
// quorum, a package is taken only if its checkpoint carries the quorum's
// cosignatures, is its own custodian's log, holds its entry, and the entry
// is a release of its key ID; each refusal says which.
func TestInvariantAgencyChecksWhatTheWitnessesCosigned(t *testing.T) {
	var ws []*torchwood.CosignatureSigner
	var refs []witness.Witness
	for _, name := range []string{"w.test/one", "w.test/two"} {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := torchwood.NewCosignatureSigner(name, key)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, s)
		refs = append(refs, witness.Witness{Key: s.Verifier().String(), URL: "http://127.0.0.1:7380"})
	}
	quorum := 2
	pub := &Public{Witnesses: refs, WitnessQuorum: &quorum}
	release := ledger.Entry{Time: time.Unix(1.8e9, 0).UTC(), Kind: ledger.KindRelease, Counter: 1, Commitment: make([]byte, 32), Outcome: ledger.OutcomeOK, KeyID: "2026-11"}
	refusal := release
	refusal.Kind, refusal.Outcome, refusal.Reason = ledger.KindRefusal, ledger.OutcomeRefused, "no_press"
	other := release
	other.KeyID = "2026-12"
	if err := pub.checkWitnessed(witnessedPackage(t, "custodian/court-a", release, ws, 2)); err != nil {
		t.Fatalf("a witnessed release: %v", err)
	}
	noLedger := witnessedPackage(t, "custodian/court-a", release, ws, 2)
	noLedger.Ledger = nil
	moved := witnessedPackage(t, "custodian/court-a", release, ws, 2)
	moved.Ledger.Entry = strings.Replace(moved.Ledger.Entry, "counter 1", "counter 2", 1)
	for _, c := range []struct {
		name string
		r    *Release
		want string
	}{
		{"one of two", witnessedPackage(t, "custodian/court-a", release, ws, 1), "1 of the 2 needed"},
		{"none", witnessedPackage(t, "custodian/court-a", release, ws, 0), "no witness cosigned it"},
		{"no ledger proof", noLedger, "carries no ledger proof"},
		{"another custodian's log", witnessedPackage(t, "custodian/court-b", release, ws, 2), `of the log "custodian/court-b", not of custodian court-a`},
		{"entry not in the checkpoint", moved, "is not in the cosigned checkpoint"},
		{"a refusal entry", witnessedPackage(t, "custodian/court-a", refusal, ws, 2), "not a release of key ID 2026-11"},
		{"another key ID's release", witnessedPackage(t, "custodian/court-a", other, ws, 2), "not a release of key ID 2026-11"},
	} {
		err := pub.checkWitnessed(c.r)
		if !errors.Is(err, ErrNotWitnessed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	zero := 0
	if err := (&Public{Witnesses: refs, WitnessQuorum: &zero}).checkWitnessed(noLedger); err != nil {
		t.Errorf("quorum 0 asks nothing: %v", err)
	}
}

// TestWitnessesNeedAnExplicitQuorum: an escrow file listing witnesses
// without witness_quorum is refused, never read as quorum 0.
func TestWitnessesNeedAnExplicitQuorum(t *testing.T) {
	p := &Public{Witnesses: []witness.Witness{{Key: "w.test/one+01234567+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", URL: "http://127.0.0.1:1"}}}
	if err := p.checkWitnesses(); err == nil || !strings.Contains(err.Error(), "no witness_quorum") {
		t.Fatalf("witnesses without a quorum: %v", err)
	}
}

// TestInvariantEscrowFileWitnessesCountOnceAndFit: the escrow file is
// refused, before any release, when one witness key is listed under two
// names (it would count twice) or a witness name is too long for the
// cosigned checkpoint to fit what the agency and auditors accept.
func TestInvariantEscrowFileWitnessesCountOnceAndFit(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ref := func(name string) witness.Witness {
		s, err := torchwood.NewCosignatureSigner(name, key)
		if err != nil {
			t.Fatal(err)
		}
		return witness.Witness{Key: s.Verifier().String(), URL: "http://127.0.0.1:7380"}
	}
	one, two := 1, 2
	for _, c := range []struct {
		name string
		p    *Public
		want string
	}{
		{"one key, two names", &Public{Witnesses: []witness.Witness{ref("w.test/a"), ref("w.test/b")}, WitnessQuorum: &two}, "have the same key"},
		{"a long name", &Public{Witnesses: []witness.Witness{ref("w.test/" + strings.Repeat("n", witness.MaxNameLen))}, WitnessQuorum: &one}, "so that its cosignature fits"},
	} {
		if err := c.p.checkWitnesses(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if err := (&Public{Witnesses: []witness.Witness{ref("w.test/" + strings.Repeat("n", witness.MaxNameLen-len("w.test/")))}, WitnessQuorum: &one}).checkWitnesses(); err != nil {
		t.Errorf("a name of %d characters: %v", witness.MaxNameLen, err)
	}
}
