package appliance_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/appliance/appliancetest"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// wantForeign opens dir and checks that it is blocked as a foreign ledger
// key, with nothing signed and nothing appended.
func (b *booted) wantForeign(t *testing.T, detail string) {
	t.Helper()
	a, err := appliance.Open(b.dir, b.conn)
	if err != nil {
		t.Fatal(err)
	}
	b.a = a
	err = a.Ledger.Blocked()
	if !errors.Is(err, ledger.ErrForeignLedgerKey) || !errors.Is(err, ledger.ErrBlocked) || !strings.Contains(err.Error(), detail) {
		t.Fatalf("Blocked() = %v; want ErrForeignLedgerKey (%q)", err, detail)
	}
	if !errors.Is(a.SignerErr, ledger.ErrForeignLedgerKey) {
		t.Fatalf("SignerErr = %v; want ErrForeignLedgerKey", a.SignerErr)
	}
	size := a.Ledger.Size()
	e := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused}
	if _, err := a.Ledger.Append(e, []byte("warrant"), nil); !errors.Is(err, ledger.ErrForeignLedgerKey) || a.Ledger.Size() != size {
		t.Fatalf("append to a foreign ledger: %v", err)
	}
	if _, err := a.Ledger.ResolveRollback(time.Now()); !errors.Is(err, ledger.ErrForeignLedgerKey) {
		t.Fatalf("resolving a foreign ledger: %v", err)
	}
}

// TestInvariantStartupStateIsBoundToTPMForeignLedgerKeyIsBlocked: a whole
// data directory forged offline under a checkpoint key of the forger's
// own, sealed to this device's EK, PCRs and floor, with a ledger padded to
// the TPM's counter and a valid binding under that key, is consistent (the
// ledger package alone, given the forged key, finds nothing wrong), yet
// the approved image refuses it: the TPM anchored another key at ledger
// init. The device's own directory, put back, opens again.
func TestInvariantStartupStateIsBoundToTPMForeignLedgerKeyIsBlocked(t *testing.T) {
	b := bootAppliance(t)
	b.provision(t, "2026-11")
	b.a.Close()
	own := snapshotDir(t, b.dir)

	forged := appliancetest.ForgeLedgerKey(t, b.conn, b.dir)
	l, err := ledger.Open(b.dir, forged.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Blocked(); err != nil {
		t.Fatalf("the forgery is not consistent, so this test shows nothing: %v", err)
	}
	l.Close()
	b.wantForeign(t, "not the one this TPM anchored")

	b.a.Close()
	b.sw.PowerCycle(t, b.conn)
	b.boot(t, "v1")
	b.wantForeign(t, "not the one this TPM anchored")

	b.a.Close()
	replaceDir(t, own, b.dir)
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); err != nil {
		t.Fatalf("the device's own directory: %v", err)
	}
}

// TestInvariantStartupStateIsBoundToTPMUnanchoredTPMIsBlocked: on a TPM
// with no anchor (a device set up before ledger init anchored its key), a
// consistent data directory is blocked and says so; an index that someone
// defined at the anchor's handle with the owner hierarchy, holding the
// forged key's digest and write-locked, does not pass for the anchor.
func TestInvariantStartupStateIsBoundToTPMUnanchoredTPMIsBlocked(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	b := &booted{sw: sw, conn: sw.Open(t), dir: t.TempDir(), spec: measure.DefaultSpec()}
	b.boot(t, "v1")
	enrolled, err := enrollment.Create(b.conn, "court-a", tpm.EKRSA2048, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(enrolled)
	if err := os.WriteFile(filepath.Join(b.dir, appliance.EnrollmentFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// What ledger init did before it anchored: a sealed key, the counter.
	importKey, err := tpm.ParseImportKey(enrolled.ImportKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tpm.ReadPCRs(b.conn, b.spec.PCRs()...)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ledger.NewSigningKey(appliance.Origin("court-a"), importKey, pcrs, tpmtest.Floor(t, b.conn))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(b.dir, appliance.LedgerKeyBlob), key.Sealed.Marshal(), 0o600)
	os.WriteFile(filepath.Join(b.dir, ledger.FileName), nil, 0o600) // the forger replaces it
	counter := tpm.Counter{Index: tpm.DefaultCounterIndex}
	if _, err := counter.Create(b.conn); err != nil {
		t.Fatal(err)
	}
	if _, err := counter.Increment(b.conn); err != nil {
		t.Fatal(err)
	}
	forged := appliancetest.ForgeLedgerKey(t, b.conn, b.dir)
	b.wantForeign(t, "has no ledger key anchor")
	b.a.Close()

	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	public := tpm2.TPMSNVPublic{
		NVIndex: tpm.AnchorIndex, NameAlg: tpm2.TPMAlgSHA256, DataSize: tpm.AnchorSize,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, WriteDefine: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(public)}).Execute(b.conn); err != nil {
		t.Fatal(err)
	}
	name, _ := tpm2.NVName(&public)
	index := tpm2.NamedHandle{Handle: tpm.AnchorIndex, Name: *name}
	digest := ledger.AnchorDigest(forged.Verifier)
	if _, err := (tpm2.NVWrite{AuthHandle: owner, NVIndex: index, Data: tpm2.TPM2BMaxNVBuffer{Buffer: digest}}).Execute(b.conn); err != nil {
		t.Fatal(err)
	}
	public.Attributes.Written = true
	name, _ = tpm2.NVName(&public)
	index.Name = *name
	if _, err := (tpm2.NVWriteLock{AuthHandle: owner, NVIndex: index}).Execute(b.conn); err != nil {
		t.Fatal(err)
	}
	b.wantForeign(t, "not a custodian ledger key anchor")
}

// TestInvariantStartupStateIsBoundToTPMLedgerInitIsOncePerTPM: a TPM
// anchors one ledger key for its life, at the end of its one ledger init.
// Another data directory's ledger init on it is refused, and so is one
// over the ledger; key files an init interrupted before its ledger left
// are replaced and bind nothing.
func TestInvariantStartupStateIsBoundToTPMLedgerInitIsOncePerTPM(t *testing.T) {
	b := bootAppliance(t)
	other := t.TempDir()
	copyFile(t, filepath.Join(b.dir, appliance.EnrollmentFile), filepath.Join(other, appliance.EnrollmentFile))
	if _, err := appliance.Init(other, b.conn, b.spec.PCRs(), time.Now()); !errors.Is(err, appliance.ErrLedgerCreated) {
		t.Fatalf("a second ledger init on the TPM: %v; want ErrLedgerCreated", err)
	}
	if _, err := appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); !errors.Is(err, ledger.ErrLedgerExists) {
		t.Fatalf("ledger init over a ledger: %v; want ErrLedgerExists", err)
	}

	// Interrupted after the key files, before anchoring: a fresh TPM.
	fresh := &booted{sw: tpmtest.StartSwtpm(t), dir: t.TempDir(), spec: b.spec}
	fresh.conn = fresh.sw.Open(t)
	fresh.boot(t, "v1")
	e, err := enrollment.Create(fresh.conn, "court-b", tpm.EKRSA2048, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(e)
	os.WriteFile(filepath.Join(fresh.dir, appliance.EnrollmentFile), data, 0o644)
	importKey, _ := tpm.ParseImportKey(e.ImportKey.PublicKey)
	pcrs, _ := tpm.ReadPCRs(fresh.conn, b.spec.PCRs()...)
	left, err := ledger.NewSigningKey(appliance.Origin("court-b"), importKey, pcrs, tpmtest.Floor(t, fresh.conn))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(fresh.dir, appliance.LedgerKeyBlob), left.Sealed.Marshal(), 0o600)
	os.WriteFile(filepath.Join(fresh.dir, appliance.LedgerKeyPub), []byte(left.Verifier+"\n"), 0o644)
	if fresh.a, err = appliance.Init(fresh.dir, fresh.conn, b.spec.PCRs(), time.Now()); err != nil {
		t.Fatal(err)
	}
	defer fresh.a.Close()
	if fresh.a.VerifierKey == left.Verifier || fresh.a.Ledger.Blocked() != nil {
		t.Fatalf("init kept the unanchored key it found (%v), or is blocked: %v", fresh.a.VerifierKey == left.Verifier, fresh.a.Ledger.Blocked())
	}
	if err := tpm.CheckAnchor(fresh.conn, ledger.AnchorDigest(fresh.a.VerifierKey)); err != nil {
		t.Fatalf("the anchor does not name the new key: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyLedger copies the ledger's files (its journal and ledger.db) from
// one directory to another, as a backup and its restore do.
func copyLedger(t *testing.T, from, to string) {
	t.Helper()
	for _, name := range ledger.Files {
		copyFile(t, filepath.Join(from, name), filepath.Join(to, name))
	}
}

// removeLedger deletes the ledger's files.
func removeLedger(t *testing.T, dir string) {
	t.Helper()
	for _, name := range ledger.Files {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInvariantLostLedgerIsNeverReplaced: the ledger deleted offline (the
// key files kept, a file dropped into trust/) is not made again by ledger
// init on the approved image, though the anchor names the directory's own
// key: a new ledger would forget the history and the replay index under
// the same verifier key. Init refuses and changes nothing; the device's
// ledger put back opens as it was. ledger.db deleted alone is rebuilt from
// the journal, never made afresh.
func TestInvariantLostLedgerIsNeverReplaced(t *testing.T) {
	b := bootAppliance(t)
	b.provision(t, "2026-11")
	release := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: "2026-11"}
	if _, err := b.a.Ledger.Append(release, []byte("warrant"), []byte("court-a/W-1")); err != nil {
		t.Fatal(err)
	}
	size := b.a.Ledger.Size()
	b.a.Close()
	backup := t.TempDir()
	copyLedger(t, b.dir, backup)

	removeLedger(t, b.dir)
	if _, err := appliance.Open(b.dir, b.conn); !errors.Is(err, ledger.ErrNoLedger) {
		t.Fatalf("open without a ledger: %v; want ErrNoLedger", err)
	}
	_, err := appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now())
	if !errors.Is(err, appliance.ErrLedgerCreated) || !strings.Contains(err.Error(), "restore it from a backup") {
		t.Fatalf("ledger init without a ledger on an anchored TPM: %v; want ErrLedgerCreated", err)
	}
	if exists, err := ledger.Exists(b.dir); exists || err != nil {
		t.Fatalf("the refused init left a ledger file (%v)", err)
	}

	copyLedger(t, backup, b.dir)
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); err != nil || b.a.Ledger.Size() != size {
		t.Fatalf("the backup put back: blocked %v, size %d (was %d)", err, b.a.Ledger.Size(), size)
	}
	if _, seen, _ := b.a.Ledger.Seen([]byte("court-a/W-1")); !seen {
		t.Fatal("the backup lost the release's replay key")
	}

	b.a.Close()
	if err := os.Remove(filepath.Join(b.dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); !errors.Is(err, ledger.ErrLedgerExists) && !errors.Is(err, appliance.ErrLedgerCreated) {
		t.Fatalf("ledger init beside a journal without ledger.db: %v; want a refusal", err)
	}
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); err != nil || b.a.Ledger.Size() != size {
		t.Fatalf("ledger.db rebuilt from the journal: blocked %v, size %d (was %d)", err, b.a.Ledger.Size(), size)
	}
}

// TestInvariantInitInterruptedBeforeAnchorFinishesOnlyItsOwnLedger: Init
// anchors the key last. Interrupted after the ledger was made (here the
// anchor's handle is taken by an index of the owner's, so anchoring
// fails), the ledger opens blocked, so nothing can be appended to it; Init
// run again refuses a ledger that holds more than its init entry, and
// finishes the one it left: the anchor then names its key and the ledger
// opens.
func TestInvariantInitInterruptedBeforeAnchorFinishesOnlyItsOwnLedger(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	b := &booted{sw: sw, conn: sw.Open(t), dir: t.TempDir(), spec: measure.DefaultSpec()}
	b.boot(t, "v1")
	enrolled, err := enrollment.Create(b.conn, "court-a", tpm.EKRSA2048, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(enrolled)
	if err := os.WriteFile(filepath.Join(b.dir, appliance.EnrollmentFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	squatter := tpm2.TPMSNVPublic{
		NVIndex: tpm.AnchorIndex, NameAlg: tpm2.TPMAlgSHA256, DataSize: tpm.AnchorSize,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary},
	}
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(squatter)}).Execute(b.conn); err != nil {
		t.Fatal(err)
	}
	if _, err := appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); !errors.Is(err, tpm.ErrNotAnchor) {
		t.Fatalf("init with the anchor's handle taken: %v; want ErrNotAnchor", err)
	}
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: tpm2.NamedHandle{Handle: tpm.AnchorIndex, Name: nvName(t, squatter)}}).Execute(b.conn); err != nil {
		t.Fatal(err)
	}
	b.wantForeign(t, "has no ledger key anchor")
	b.a.Close()
	left := t.TempDir()
	copyLedger(t, b.dir, left)

	// An entry appended to the unanchored ledger, with the key unsealed
	// as only Init may.
	key := readKey(t, b.dir)
	signer, stateKey, err := key.OpenUnanchored(b.conn)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := tpm.ParseEK(enrolled.EK.PublicKey)
	cfg := ledger.Config{
		Origin: appliance.Origin("court-a"), Device: ek.Name(), Signer: signer, StateKey: stateKey,
		Counter: &ledger.TPMCounter{TPM: b.conn, Counter: tpm.Counter{Index: tpm.DefaultCounterIndex}},
		Bound:   appliance.BoundDirs(b.dir),
	}
	l, err := ledger.Open(b.dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "no-press"}
	if _, err := l.Append(e, []byte("warrant"), nil); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); !errors.Is(err, appliance.ErrUnfinishedInit) {
		t.Fatalf("finishing init over a ledger with 2 entries: %v; want ErrUnfinishedInit", err)
	}
	if _, err := tpm.ReadAnchor(b.conn); !errors.Is(err, tpm.ErrNoAnchor) {
		t.Fatalf("the refused init anchored a key: %v", err)
	}

	// The ledger Init left, put back: its counter is now one behind.
	copyLedger(t, left, b.dir)
	if _, err := appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); !errors.Is(err, appliance.ErrUnfinishedInit) || !errors.Is(err, ledger.ErrRolledBack) {
		t.Fatalf("finishing init over an older ledger: %v; want ErrUnfinishedInit (rolled back)", err)
	}

	// Interrupted again, from the start: the ledger it leaves is at the
	// TPM's counter and holds its init entry alone, so Init finishes it.
	removeLedger(t, b.dir)
	if _, err := (tpm2.NVDefineSpace{AuthHandle: owner, PublicInfo: tpm2.New2B(squatter)}).Execute(b.conn); err != nil {
		t.Fatal(err)
	}
	if _, err := appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); !errors.Is(err, tpm.ErrNotAnchor) {
		t.Fatalf("init with the anchor's handle taken: %v; want ErrNotAnchor", err)
	}
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: owner, NVIndex: tpm2.NamedHandle{Handle: tpm.AnchorIndex, Name: nvName(t, squatter)}}).Execute(b.conn); err != nil {
		t.Fatal(err)
	}
	made := readKey(t, b.dir).Verifier
	if b.a, err = appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); err != nil {
		t.Fatalf("finishing an interrupted init: %v", err)
	}
	if b.a.VerifierKey != made || b.a.Ledger.Size() != 1 {
		t.Fatalf("finished init: key %q (the interrupted init made %q), %d entries", b.a.VerifierKey, made, b.a.Ledger.Size())
	}
	if err := tpm.CheckAnchor(b.conn, ledger.AnchorDigest(made)); err != nil {
		t.Fatalf("the anchor does not name the key: %v", err)
	}
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); err != nil {
		t.Fatalf("the finished ledger: %v", err)
	}
}

func nvName(t *testing.T, public tpm2.TPMSNVPublic) tpm2.TPM2BName {
	t.Helper()
	name, err := tpm2.NVName(&public)
	if err != nil {
		t.Fatal(err)
	}
	return *name
}

func readKey(t *testing.T, dir string) *ledger.SigningKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, appliance.LedgerKeyBlob))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := tpm.ParseBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(dir, appliance.LedgerKeyPub))
	if err != nil {
		t.Fatal(err)
	}
	return &ledger.SigningKey{Sealed: blob, Verifier: strings.TrimSpace(string(pub))}
}
