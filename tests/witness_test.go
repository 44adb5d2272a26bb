package tests

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/hsm/witness"
	"github.com/custodian-project/custodian/hsm/witness/witnesstest"
	"github.com/custodian-project/custodian/tpm"
)

// witnessedRig is a rig whose escrow file for 2026-11 names n real
// litewitness processes that know its ledger, with the given quorum.
func witnessedRig(t *testing.T, n, quorum int, timeout time.Duration) (*rig, []*witnesstest.Witness) {
	t.Helper()
	var ws []*witnesstest.Witness
	r := newRigWith(t, "court-a", func(r *rig) []escrow.Option {
		r.witnessTimeout = timeout
		for _, name := range []string{"witness.test/one", "witness.test/two", "witness.test/three"}[:n] {
			ws = append(ws, witnesstest.Start(t, name, "custodian/court-a", r.a.VerifierKey))
		}
		return []escrow.Option{escrow.WithWitnesses(refs(ws), quorum)}
	})
	r.court.install(t, r.a, time.Now().UTC())
	return r, ws
}

func refs(ws []*witnesstest.Witness) []witness.Witness {
	out := make([]witness.Witness, len(ws))
	for i, w := range ws {
		out[i] = w.Ref()
	}
	return out
}

// withoutCosignatures keeps the checkpoint's lines up to the log's own
// signature and keep of the witnesses' lines after it.
func withoutCosignatures(t *testing.T, signed string, keep int) string {
	t.Helper()
	lines := strings.SplitAfter(signed, "\n")
	i := 0
	for i < len(lines) && !strings.HasPrefix(lines[i], "— custodian/") {
		i++
	}
	if i+1+keep > len(lines) {
		t.Fatalf("no log signature or too few cosignatures in %q", signed)
	}
	return strings.Join(lines[:i+1+keep], "")
}

// writePackage writes pkg with its checkpoint replaced by checkpoint.
func writePackage(t *testing.T, pkg *escrow.Release, checkpoint string) string {
	t.Helper()
	c := *pkg
	inc := *pkg.Ledger
	inc.Checkpoint = checkpoint
	c.Ledger = &inc
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "release.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tempFile writes data to a new file named name and returns its path.
func tempFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	writeFile(t, path, data)
	return path
}

// TestInvariantReleaseCarriesWitnessQuorumAndAgencyRefusesWithout: with
// an escrow file naming two real litewitness processes and quorum 2, the
// package's checkpoint holds the release entry and both cosignatures (and
// still verifies with the appliance's key); the cosigned checkpoint is
// kept in the data directory and served. The agency's recover and escrow
// open refuse the same package with no cosignature or with one of two,
// naming the cause, and go on to the shares' count with both.
func TestInvariantReleaseCarriesWitnessQuorumAndAgencyRefusesWithout(t *testing.T) {
	r, ws := witnessedRig(t, 2, 2, 0)
	defer r.stop()
	p := r.escrow.WitnessPolicy()
	scoped := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped), escrow.WithWitnesses(refs(ws), 2))

	_, pkg := r.releaseOK(t, r.warrant(t, "W-witnessed"))
	cp, names, err := witness.VerifyQuorum([]byte(pkg.Ledger.Checkpoint), p)
	if err != nil || len(names) != 2 {
		t.Fatalf("the package's checkpoint: %v (cosigned by %v)", err, names)
	}
	if e, err := pkg.Ledger.Check(r.a.VerifierKey); err != nil || e.Kind != ledger.KindRelease || uint64(pkg.Ledger.Index) >= cp.Size {
		t.Fatalf("the package's entry in its checkpoint: %v %+v", err, e)
	}
	stored, err := os.ReadFile(filepath.Join(r.d.data, witness.Dir, witness.FileName))
	if err != nil || !strings.HasPrefix(string(stored), withoutCosignatures(t, pkg.Ledger.Checkpoint, 0)) {
		t.Fatalf("the cosigned checkpoint is not kept beside the ledger: %v", err)
	}
	if code, served := r.c.get(t, release.TlogPrefix+"checkpoint"); code != http.StatusOK {
		t.Fatalf("checkpoint: %d", code)
	} else if _, _, err := witness.VerifyQuorum(served, p); err != nil {
		t.Fatalf("the served checkpoint: %v", err)
	}

	// The agency, in the library and on the command line.
	if _, err := escrow.Recover(r.agency, r.escrow, []*escrow.Release{pkg}); !errors.Is(err, escrow.ErrNotEnoughShares) || errors.Is(err, escrow.ErrNotWitnessed) {
		t.Fatalf("a witnessed package: %v, want only too few shares (court-z is absent)", err)
	}
	identity := tempFile(t, "agency.key", []byte(r.agency.String()+"\n"))
	pubData, _ := r.escrow.Marshal()
	pubPath := tempFile(t, "escrow-2026-11.pub.json", pubData)
	for keep, want := range map[int]string{0: "no witness cosigned it", 1: "1 of the 2 needed"} {
		stripped := writePackage(t, pkg, withoutCosignatures(t, pkg.Ledger.Checkpoint, keep))
		code, _, errOut := cli(t, "recover", "--identity", identity, "--escrow", pubPath, "--release", stripped, "--out", filepath.Join(t.TempDir(), "key"))
		if code == 0 || !strings.Contains(errOut, "the release from court-a: the release is not witnessed") || !strings.Contains(errOut, want) {
			t.Fatalf("recover with %d cosignatures: exit %d\n%s", keep, code, errOut)
		}
	}

	// Scoped: escrow open refuses the package without the quorum.
	env, err := escrow.Seal(scoped, "alice@example.org", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := escrow.ParseEnvelope(env)
	w := draftWarrant("W-scoped-witnessed", r.agency.Public(), []string{"court-a", "court-z"}, []string{"2026-12"}, time.Now().UTC())
	w.Envelopes = append(w.Envelopes, parsed.Ref())
	status, st, eb := r.c.submit(t, r.court.signDocument(t, w, time.Now()))
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	if st = r.c.wait(t, st.ID); st.State != release.StateReleased {
		t.Fatalf("scoped release: %+v", st)
	}
	_, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-12")
	spkg, err := escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	scopedData, _ := scoped.Marshal()
	scopedPath := tempFile(t, "escrow-2026-12.pub.json", scopedData)
	envPath := tempFile(t, "m.env", env)
	open := func(release string) (int, string) {
		code, _, errOut := cli(t, "escrow", "open", "--identity", identity, "--escrow", scopedPath, "--release", release, "--in", envPath, "--out", filepath.Join(t.TempDir(), "m"))
		return code, errOut
	}
	if code, errOut := open(writePackage(t, spkg, withoutCosignatures(t, spkg.Ledger.Checkpoint, 0))); code == 0 || !strings.Contains(errOut, "the release is not witnessed") {
		t.Fatalf("escrow open without cosignatures: exit %d\n%s", code, errOut)
	}
	if code, errOut := open(writePackage(t, spkg, spkg.Ledger.Checkpoint)); code == 0 || strings.Contains(errOut, "witnessed") || !strings.Contains(errOut, "not enough valid partials") {
		t.Fatalf("escrow open with the quorum: exit %d\n%s", code, errOut)
	}
}

// parkedRig is a witnessed rig (two witnesses, quorum 2) whose warrant
// was approved while both answered and whose second witness stopped right
// after the release entry: the request awaits its witnesses. It returns
// the warrant, the request's status and the release entries before it.
func parkedRig(t *testing.T, serial string) (*rig, []*witnesstest.Witness, []byte, release.Status, int) {
	t.Helper()
	r, ws := witnessedRig(t, 2, 2, 2*time.Second)
	var once sync.Once
	hook := func(stage, keyID string) {
		if stage == "entry" {
			once.Do(ws[1].Stop)
		}
	}
	r.hook.Store(&hook)
	p7s := r.warrant(t, serial)
	before := r.releaseEntries(t)
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	r.rec.Reset()
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateAwaitingWitnesses || st.Code != release.CodeWitnessTimeout || len(st.Packages) != 0 || !strings.Contains(st.Message, "--resume "+st.ID) {
		t.Fatalf("a witness gone after the entry: %+v", st)
	}
	checkParkedMessage(t, st)
	checkNothingReleased(t, r, st, before+1)
	return r, ws, p7s, st, before
}

// checkParkedMessage checks the status message of a request awaiting its
// witnesses: its first 200 characters (what a client shows of it) say
// what to wait for and the --resume command, and nothing in it advises a
// restart (which ends the request) or a new submission or a new warrant.
func checkParkedMessage(t *testing.T, st release.Status) {
	t.Helper()
	head := st.Message[:min(200, len(st.Message))]
	if !strings.HasPrefix(head, release.ParkedFix(st.Code)) || !strings.Contains(head, "wait") || !strings.Contains(head, "--resume "+st.ID) {
		t.Fatalf("the first 200 characters of a parked request's message do not say what to wait for and --resume: %q", head)
	}
	for _, wrong := range []string{"restart the appliance", "submitted again", "new warrant", "power cycle"} {
		if strings.Contains(st.Message, wrong) {
			t.Fatalf("a parked request's message says %q: %q", wrong, st.Message)
		}
	}
}

// checkNothingReleased checks that r's TPM unsealed nothing, no package
// exists, the ledger holds releases release entries and no failure entry
// follows the request's entry.
func checkNothingReleased(t *testing.T, r *rig, st release.Status, releases int) {
	t.Helper()
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 0 {
		t.Fatalf("the TPM unsealed the share %d times without the witness quorum", n)
	}
	if matches := storedPackages(t, r.a); len(matches) != 0 {
		t.Fatalf("packages on disk: %v", matches)
	}
	if n := r.releaseEntries(t); n != releases {
		t.Fatalf("%d release entries, want %d", n, releases)
	}
	i := st.LedgerIndices["2026-11"]
	if e := r.c.entryAt(t, i, r.a.VerifierKey); e.Kind != ledger.KindRelease {
		t.Fatalf("entry %d: %+v", i, e)
	}
	for j := i + 1; j < r.a.Ledger.Size(); j++ {
		if e := r.c.entryAt(t, j, r.a.VerifierKey); e.Kind == ledger.KindFailure {
			t.Fatalf("entry %d is a failure (%s) of a request awaiting its witnesses", j, e.Reason)
		}
	}
}

// resume asks the custodian to try a request awaiting its witnesses again.
func (c *client) resume(t testing.TB, id string) (int, release.Status) {
	t.Helper()
	resp, err := c.http.Post(c.base+"/v1/requests/"+id+"/resume", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st release.Status
	if resp.StatusCode == http.StatusAccepted {
		if err := jsonUnmarshal(readAll(resp), &st); err != nil {
			t.Fatal(err)
		}
	} else {
		readAll(resp)
	}
	return resp.StatusCode, st
}

// TestInvariantWitnessTimeoutAfterTheEntryReleasesOnceOnResume: a witness
// the quorum of 2 needs stops right after the release entry is durable
// (it answered before the summary and after the press). The release waits
// for the witness timeout and then awaits its witnesses: nothing
// unsealed, no package, no failure entry. Asked to try again while the
// witness is still down, it awaits them again, unsealing nothing; a
// second try while one runs is refused. Once the witness is back, a try
// releases under the same entry, once: one unseal, one package whose
// checkpoint the quorum cosigned; no further try is accepted and the
// warrant is spent (replayed).
func TestInvariantWitnessTimeoutAfterTheEntryReleasesOnceOnResume(t *testing.T) {
	r, ws, p7s, st, before := parkedRig(t, "W-no-quorum")
	defer r.stop()
	i := st.LedgerIndices["2026-11"]

	code, again := r.c.resume(t, st.ID)
	if code != http.StatusAccepted || again.State != release.StateReleasing {
		t.Fatalf("resume: %d %+v", code, again)
	}
	if code, _ := r.c.resume(t, st.ID); code != http.StatusNotFound {
		t.Fatalf("a second resume while one runs: %d, want 404", code)
	}
	if again = r.c.wait(t, st.ID); again.State != release.StateAwaitingWitnesses || again.Code != release.CodeWitnessTimeout {
		t.Fatalf("resume with the witness still down: %+v", again)
	}
	checkNothingReleased(t, r, st, before+1)

	// The officer's client tries again once the witness is back.
	ws[1].Restart()
	out := filepath.Join(t.TempDir(), "court-a.release.json")
	args := []string{"release", "--server", r.c.base, "--warrant", tempFile(t, "w.p7s", p7s), "--out", out, "--resume", st.ID}
	if code, stdout, stderr := cli(t, append(args, r.site.officerArgs()...)...); code != 0 || !strings.Contains(stdout, "trying request "+st.ID+" again") {
		t.Fatalf("release --resume: exit %d\n%s%s", code, stdout, stderr)
	}
	done := r.c.wait(t, st.ID)
	if done.State != release.StateReleased || len(done.Packages) != 1 || done.LedgerIndices["2026-11"] != i {
		t.Fatalf("resume with the witnesses back: %+v", done)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 1 {
		t.Fatalf("the TPM unsealed the share %d times, want once", n)
	}
	_, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	if saved, err := os.ReadFile(out); err != nil || !bytes.Equal(saved, data) {
		t.Fatalf("the package the client saved is not the custodian's: %v", err)
	}
	pkg, err := escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := witness.VerifyQuorum([]byte(pkg.Ledger.Checkpoint), r.escrow.WitnessPolicy()); err != nil || pkg.Ledger.Index != i {
		t.Fatalf("the package: entry %d, %v", pkg.Ledger.Index, err)
	}
	if n := r.releaseEntries(t); n != before+1 {
		t.Fatalf("%d release entries, want %d", n, before+1)
	}
	if code, _ := r.c.resume(t, st.ID); code != http.StatusNotFound {
		t.Fatalf("resume of a released request: %d, want 404", code)
	}
	r.expectRefusal(t, p7s, release.CodeReplayed, true)
}

// TestInvariantRestartEndsARequestAwaitingWitnesses: a request awaiting
// its witnesses when the daemon restarts is ended as any release cut off
// after its entry: a failure entry (interrupted), nothing unsealed, and no
// try is accepted after.
func TestInvariantRestartEndsARequestAwaitingWitnesses(t *testing.T) {
	r, ws, _, st, before := parkedRig(t, "W-restart")
	r.stop()
	ws[1].Restart()
	r.open(t) // unseals the ledger key
	r.rec.Reset()
	r.start(t)
	defer r.stop()
	if code, _ := r.c.resume(t, st.ID); code != http.StatusNotFound {
		t.Fatalf("resume after a restart: %d, want 404", code)
	}
	var after release.Status
	r.c.getJSON(t, "/v1/requests/"+st.ID, &after)
	if after.State != release.StateFailed || after.Failed["2026-11"] != release.CodeInterrupted || len(after.Packages) != 0 {
		t.Fatalf("after the restart: %+v", after)
	}
	i := st.LedgerIndices["2026-11"]
	if e := r.c.entryAt(t, r.a.Ledger.Size()-1, r.a.VerifierKey); e.Kind != ledger.KindFailure || e.Reason != string(release.CodeInterrupted) || r.a.Ledger.Size() <= i+1 {
		t.Fatalf("the last entry: %+v, want the failure interrupted", e)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 0 {
		t.Fatalf("the TPM unsealed the share %d times", n)
	}
	if n := r.releaseEntries(t); n != before+1 {
		t.Fatalf("%d release entries, want %d", n, before+1)
	}
}

// releasedOnceAfterOutage checks, once the witnesses are back, that the
// warrant refused during their outage releases (it was not spent), once:
// one more release entry, one unseal, and a third submission is replayed.
func releasedOnceAfterOutage(t *testing.T, r *rig, p7s []byte, before int) {
	t.Helper()
	if n := r.releaseEntries(t); n != before {
		t.Fatalf("%d release entries during the outage, want %d", n, before)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 0 {
		t.Fatalf("the TPM unsealed the share %d times without the witness quorum", n)
	}
	if matches := storedPackages(t, r.a); len(matches) != 0 {
		t.Fatalf("packages on disk during the outage: %v", matches)
	}
	_, pkg := r.releaseOK(t, p7s)
	if _, _, err := witness.VerifyQuorum([]byte(pkg.Ledger.Checkpoint), r.escrow.WitnessPolicy()); err != nil {
		t.Fatalf("the package after the outage: %v", err)
	}
	if n := r.releaseEntries(t); n != before+1 {
		t.Fatalf("%d release entries after the outage, want %d", n, before+1)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 1 {
		t.Fatalf("the TPM unsealed the share %d times, want once", n)
	}
	r.expectRefusal(t, p7s, release.CodeReplayed, true)
}

// TestInvariantWitnessOutageBeforeTheSummaryDoesNotSpendTheWarrant: with
// one of the two witnesses a quorum of 2 needs down, a verified warrant
// is refused at submission with witness_unreachable (503), logged as a
// refusal entry the first time and counted after, before any summary or
// press: no release entry, nothing unsealed. When the witness is back
// the same warrant releases, once.
func TestInvariantWitnessOutageBeforeTheSummaryDoesNotSpendTheWarrant(t *testing.T) {
	r, ws := witnessedRig(t, 2, 2, 2*time.Second)
	defer r.stop()
	p7s := r.warrant(t, "W-outage-before")
	before := r.releaseEntries(t)
	ws[1].Stop()
	r.rec.Reset()
	r.expectRefusal(t, p7s, release.CodeWitnessUnreachable, true)
	r.expectRefusal(t, p7s, release.CodeWitnessUnreachable, false) // the same again: counted
	ws[1].Restart()
	releasedOnceAfterOutage(t, r, p7s, before)
}

// TestInvariantWitnessOutageAfterThePressDoesNotSpendTheWarrant: a
// witness the quorum needs goes down between the summary and the press:
// after the press the witnesses are asked again before the release entry,
// the request is refused with witness_unreachable and a refusal entry,
// no release entry is written and nothing unsealed. When the witness is
// back the same warrant releases, once.
func TestInvariantWitnessOutageAfterThePressDoesNotSpendTheWarrant(t *testing.T) {
	r, ws := witnessedRig(t, 2, 2, 2*time.Second)
	defer r.stop()
	p7s := r.warrant(t, "W-outage-after")
	before := r.releaseEntries(t)
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	ws[1].Stop()
	r.rec.Reset()
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateRefused || st.Code != release.CodeWitnessUnreachable || len(st.Packages) != 0 {
		t.Fatalf("a press while a witness is down: %+v", st)
	}
	if e := r.c.entryAt(t, st.LedgerIndices[""], r.a.VerifierKey); e.Kind != ledger.KindRefusal || e.Reason != string(release.CodeWitnessUnreachable) {
		t.Fatalf("logged as %+v, want the refusal witness_unreachable", e)
	}
	ws[1].Restart()
	releasedOnceAfterOutage(t, r, p7s, before)
}

// TestInvariantForkIsRefusedByWitnessesAndCaughtByMonitor: a copy of the
// data directory restored after a witnessed release, resolved by its
// operator and grown into another history, is refused by both witnesses:
// its next warrant is refused with witness_refused at submission, before
// any release entry, and nothing is released. A
// monitor that never saw the first history (a fresh state) but asks the
// escrow file's witnesses raises a split view; the same monitor before
// the fork found nothing.
func TestInvariantForkIsRefusedByWitnessesAndCaughtByMonitor(t *testing.T) {
	r, _ := witnessedRig(t, 2, 2, 10*time.Second)
	w := newWatchedRig(t, r)
	pubData, _ := r.escrow.Marshal()
	pubPath := tempFile(t, "escrow-2026-11.pub.json", pubData)

	r.releaseOK(t, r.warrant(t, "W-before-fork"))
	fork := w.snapshot(t)
	w.r.releaseOK(t, w.r.warrant(t, "W-first-history"))
	if code, out, errOut := w.monitor(t, "--escrow", pubPath); code != 0 {
		t.Fatalf("the honest history: exit %d\n%s%s", code, out, errOut)
	}
	honest := w.r.a.Ledger.Size()

	w.restore(t, fork)
	if _, err := w.r.a.Ledger.ResolveRollback(time.Now()); err != nil {
		t.Fatal(err)
	}
	growLedger(t, w.r, honest+2)
	time.Sleep(1100 * time.Millisecond) // past the replay floor the resolve raised
	w.r.rec.Reset()
	releases := w.r.releaseEntries(t)
	// Refused at submission, before the summary: no release entry.
	w.r.expectRefusal(t, w.r.warrant(t, "W-second-history"), release.CodeWitnessRefused, true)
	if n := w.r.releaseEntries(t); n != releases {
		t.Fatalf("a release entry on the second history (%d, was %d)", n, releases)
	}
	if n, _ := w.r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 0 {
		t.Fatal("the TPM unsealed the share on a history the witnesses refused")
	}

	w.state = t.TempDir() // a monitor that never saw the first history
	code, _, errOut := w.monitor(t, "--escrow", pubPath)
	if code != 7 || !strings.Contains(errOut, "split view: its witnesses cosigned another history of this log") {
		t.Fatalf("the monitor on the second history: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "evidence: "+w.state) || !strings.Contains(errOut, ".served.checkpoint") {
		t.Fatalf("the served checkpoint is not kept as evidence:\n%s", errOut)
	}
}

// TestLedgerVerifyRefusesCheckpointWithoutQuorum: ledger verify with an
// escrow file that asks for two witnesses accepts the appliance's
// checkpoint once both cosigned it — after a release, and after a refusal
// the daemon submitted by itself — and refuses a newer one they have not
// (the witnesses are gone); without --escrow it verifies as before.
func TestLedgerVerifyRefusesCheckpointWithoutQuorum(t *testing.T) {
	r, ws := witnessedRig(t, 2, 2, 5*time.Second)
	defer r.stop()
	pubData, _ := r.escrow.Marshal()
	pubPath := tempFile(t, "escrow-2026-11.pub.json", pubData)
	r.releaseOK(t, r.warrant(t, "W-verify"))
	remote := []string{"ledger", "verify", "--server", r.c.base, "--verifier-key", filepath.Join(r.d.data, "ledger-key.pub"), "--ca", r.site.ServerCA}
	code, out, errOut := cli(t, append(remote, "--escrow", pubPath)...)
	if code != 0 || !strings.Contains(out, "cosigned by 2 witnesses") {
		t.Fatalf("a cosigned checkpoint: exit %d\n%s%s", code, out, errOut)
	}
	// A refusal's entry is submitted to the witnesses without a release
	// waiting on it: the served checkpoint is soon cosigned again.
	r.expectRefusal(t, r.warrant(t, "W-elsewhere", "court-q"), "not_addressed", true)
	waitFor(t, "the refusal's checkpoint cosigned", 20*time.Second, func() bool {
		_, served := r.c.get(t, release.TlogPrefix+"checkpoint")
		cp, _, err := witness.VerifyQuorum(served, r.escrow.WitnessPolicy())
		return err == nil && int64(cp.Size) == r.a.Ledger.Size()
	})
	if code, out, errOut := cli(t, append(remote, "--escrow", pubPath)...); code != 0 {
		t.Fatalf("after the refusal: exit %d\n%s%s", code, out, errOut)
	}
	for _, w := range ws {
		w.Stop()
	}
	growLedger(t, r, r.a.Ledger.Size()+1)
	code, _, errOut = cli(t, append(remote, "--escrow", pubPath)...)
	if code == 0 || !strings.Contains(errOut, "not cosigned by the witness quorum: 0 of the 2 needed") {
		t.Fatalf("an uncosigned checkpoint: exit %d\n%s", code, errOut)
	}
	if code, out, errOut := cli(t, remote...); code != 0 {
		t.Fatalf("without --escrow: exit %d\n%s%s", code, out, errOut)
	}
}

// TestInvariantResumeChecksTheWarrantAgain: a request awaiting its
// witnesses whose warrant stopped verifying meanwhile (its judge
// revoked) is not released when tried again, though the witnesses are back: the
// key ID fails with changed_after_approval and its cause, logged as a
// failure entry after its release entry, and the TPM unseals nothing.
func TestInvariantResumeChecksTheWarrantAgain(t *testing.T) {
	r, ws, _, st, _ := parkedRig(t, "W-expires-meanwhile")
	defer r.stop()
	ws[1].Restart()
	r.court.install(t, r.a, r.now().UTC(), r.court.judge) // the judge revoked meanwhile
	if code, _ := r.c.resume(t, st.ID); code != http.StatusAccepted {
		t.Fatalf("resume: %d", code)
	}
	done := r.c.wait(t, st.ID)
	if done.State != release.StateFailed || done.Failed["2026-11"] != release.CodeChangedAfterApproval || done.Cause != release.Code(warrant.ReasonRevoked) || len(done.Packages) != 0 {
		t.Fatalf("resume of a warrant that no longer verifies: %+v", done)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 0 {
		t.Fatalf("the TPM unsealed the share %d times", n)
	}
	last := r.c.entryAt(t, r.a.Ledger.Size()-1, r.a.VerifierKey)
	if last.Kind != ledger.KindFailure || last.Reason != string(release.CodeChangedAfterApproval) || last.KeyID != "2026-11" {
		t.Fatalf("the last entry: %+v, want the failure changed_after_approval", last)
	}
}

// TestInvariantOnlyTheSubmittingCertificateResumes: a parked request is
// tried again only by the certificate that submitted its warrant. Another
// court's officer (same CA) and a client without a certificate are
// refused, start nothing and unseal nothing; the submitter's resume then
// releases once.
func TestInvariantOnlyTheSubmittingCertificateResumes(t *testing.T) {
	r, ws, _, st, before := parkedRig(t, "W-other-officer")
	defer r.stop()
	ws[1].Restart()
	anon := &client{base: r.c.base, http: r.site.httpClient(false)}
	if code, _ := anon.resume(t, st.ID); code != http.StatusForbidden {
		t.Fatalf("resume without a certificate: %d, want 403", code)
	}
	other, err := tls.LoadX509KeyPair(r.site.OtherCert, r.site.OtherKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: r.site.roots, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{other}}
	oc := &client{base: r.c.base, http: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}}
	if code, _ := oc.resume(t, st.ID); code != http.StatusNotFound {
		t.Fatalf("another officer's resume: %d, want 404", code)
	}
	var now release.Status
	r.c.getJSON(t, "/v1/requests/"+st.ID, &now)
	if now.State != release.StateAwaitingWitnesses {
		t.Fatalf("after another officer's resume: %+v", now)
	}
	// IDs that are paths once unescaped name no request, for the submitter too.
	for _, id := range []string{"..%2F..%2F" + st.ID, "..%2F" + release.Dir + "%2F" + st.ID, "%2E%2E"} {
		if code, _ := r.c.resume(t, id); code != http.StatusNotFound {
			t.Fatalf("resume of %s: %d, want 404", id, code)
		}
	}
	checkNothingReleased(t, r, st, before+1)
	if code, _ := r.c.resume(t, st.ID); code != http.StatusAccepted {
		t.Fatalf("the submitter's resume: %d", code)
	}
	if done := r.c.wait(t, st.ID); done.State != release.StateReleased {
		t.Fatalf("the submitter's resume: %+v", done)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 1 {
		t.Fatalf("the TPM unsealed the share %d times, want once", n)
	}
}

// TestInvariantResumeWithTheTPMFullWaitsAgain: a resume that finds the
// TPM's slots taken leaves the request awaiting (tpm_full), writes no
// entry and unseals nothing; neither the status nor the client advise a
// restart or a new submission, and the client shows --resume. Once the
// slots are free, a resume releases once.
func TestInvariantResumeWithTheTPMFullWaitsAgain(t *testing.T) {
	r, ws, p7s, st, before := parkedRig(t, "W-full-resume")
	defer r.stop()
	ws[1].Restart()
	var aks []*tpm.AK
	for range 3 {
		ak, err := tpm.LoadAK(r.tpm)
		if err != nil {
			t.Fatal(err)
		}
		aks = append(aks, ak)
	}
	out := filepath.Join(t.TempDir(), "court-a.release.json")
	args := []string{"release", "--server", r.c.base, "--warrant", tempFile(t, "w.p7s", p7s), "--out", out, "--resume", st.ID}
	code, stdout, stderr := cli(t, append(args, r.site.officerArgs()...)...)
	if code == 0 || !strings.Contains(stderr, "--resume "+st.ID) || !strings.Contains(stderr, release.ParkedFix(release.CodeTPMFull)) || strings.Contains(stderr, "restart the appliance") {
		t.Fatalf("release --resume with the TPM full: exit %d\n%s%s", code, stdout, stderr)
	}
	var now release.Status
	r.c.getJSON(t, "/v1/requests/"+st.ID, &now)
	if now.State != release.StateAwaitingWitnesses || now.Code != release.CodeTPMFull {
		t.Fatalf("after a resume with the TPM full: %+v", now)
	}
	checkParkedMessage(t, now)
	checkNothingReleased(t, r, st, before+1)
	for _, ak := range aks {
		ak.Close()
	}
	resumeReleasesOnce(t, r, st.ID, "resume with room")
}

// TestInvariantResumeWithAStaleCRLWaitsAgain: a resume that finds the
// court's CRL out of date (an operator fixes it; it says nothing against
// the warrant) leaves the request awaiting (crl_stale), writes no failure
// entry and unseals nothing; once the trust admin installs a fresh CRL, a
// resume checks revocation against it and releases once.
func TestInvariantResumeWithAStaleCRLWaitsAgain(t *testing.T) {
	r, ws, _, st, before := parkedRig(t, "W-stale-crl")
	defer r.stop()
	ws[1].Restart()
	r.skew.Store(int64(36 * time.Hour)) // past the CRL's next update (24 h); the warrant is valid 7 days
	if code, _ := r.c.resume(t, st.ID); code != http.StatusAccepted {
		t.Fatalf("resume: %d", code)
	}
	now := r.c.wait(t, st.ID)
	if now.State != release.StateAwaitingWitnesses || now.Code != release.Code(warrant.ReasonCRLStale) || len(now.Failed) != 0 {
		t.Fatalf("resume with a stale CRL: %+v", now)
	}
	checkParkedMessage(t, now)
	checkNothingReleased(t, r, st, before+1)
	r.court.install(t, r.a, r.now().UTC()) // a fresh CRL
	resumeReleasesOnce(t, r, st.ID, "resume with a fresh CRL")
}

// TestInvariantResumeChecksTheWarrantFileFirst: `release --resume` with
// another warrant than the request's is refused by the client before it
// asks the custodian to try again: the request still awaits, nothing is
// unsealed, and no salts file is written beside the wrong --out.
func TestInvariantResumeChecksTheWarrantFileFirst(t *testing.T) {
	r, ws, _, st, before := parkedRig(t, "W-resume-wrong-file")
	defer r.stop()
	ws[1].Restart()
	otherW := r.warrant(t, "W-some-other")
	dir := t.TempDir()
	out := filepath.Join(dir, "court-a.release.json")
	args := []string{"release", "--server", r.c.base, "--warrant", tempFile(t, "w.p7s", otherW), "--out", out, "--resume", st.ID}
	code, stdout, stderr := cli(t, append(args, r.site.officerArgs()...)...)
	if code == 0 || !strings.Contains(stderr, "is not for the warrant --warrant gives") {
		t.Fatalf("--resume with another warrant: exit %d\n%s%s", code, stdout, stderr)
	}
	var now release.Status
	r.c.getJSON(t, "/v1/requests/"+st.ID, &now)
	if now.State != release.StateAwaitingWitnesses || now.Code != release.CodeWitnessTimeout {
		t.Fatalf("after --resume with another warrant: %+v", now)
	}
	checkNothingReleased(t, r, st, before+1)
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Fatalf("files written beside --out: %v", files)
	}
}

// TestInvariantResumeWithTheClockBehindWaitsAgain: a resume while the
// appliance's clock is behind its ledger leaves the request awaiting
// (clock_behind), nothing written or unsealed; once the clock is set, a
// resume releases once.
func TestInvariantResumeWithTheClockBehindWaitsAgain(t *testing.T) {
	r, ws, _, st, before := parkedRig(t, "W-clock-behind")
	defer r.stop()
	ws[1].Restart()
	r.skew.Store(int64(-time.Minute)) // behind the release entry; officers' certificates stay valid
	if code, _ := r.c.resume(t, st.ID); code != http.StatusAccepted {
		t.Fatalf("resume: %d", code)
	}
	now := r.c.wait(t, st.ID)
	if now.State != release.StateAwaitingWitnesses || now.Code != release.CodeClockBehind || len(now.Failed) != 0 {
		t.Fatalf("resume with the clock behind: %+v", now)
	}
	checkParkedMessage(t, now)
	checkNothingReleased(t, r, st, before+1)
	r.skew.Store(0)
	resumeReleasesOnce(t, r, st.ID, "resume with the clock set")
}

// TestInvariantResumeWithTheSameOutKeepsEverySalt: the officer fetches a
// parked request with --request and then resumes it with --resume, both
// with the --out docs/officer.md shows, as the first run would have left
// it. Neither run is refused for the salts file an earlier run kept; that
// file is left byte for byte, and each run keeps its salts in a new file
// beside it, saying so.
func TestInvariantResumeWithTheSameOutKeepsEverySalt(t *testing.T) {
	r, ws, p7s, st, _ := parkedRig(t, "W-same-out")
	defer r.stop()
	dir := t.TempDir()
	out := filepath.Join(dir, "court-a.release.json")
	first := filepath.Join(dir, "court-a.release.salts.json")
	w := tempFile(t, "w.p7s", p7s)
	run := func(flag string) (int, string, string) {
		return cli(t, append([]string{"release", "--server", r.c.base, "--warrant", w, "--out", out, flag, st.ID}, r.site.officerArgs()...)...)
	}

	// The first run: the request awaits its witnesses; its salt is kept.
	if code, stdout, stderr := run("--request"); code == 0 || !strings.Contains(stderr, "--resume "+st.ID) || !strings.Contains(stdout, first) {
		t.Fatalf("release --request of a parked request: exit %d\n%s%s", code, stdout, stderr)
	}
	kept, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(dir, "court-a.release.salts.2.json")
	if code, stdout, stderr := run("--request"); code == 0 || strings.Contains(stderr, "exists") || !strings.Contains(stdout, "in "+second) {
		t.Fatalf("release --request again with the same --out: exit %d\n%s%s", code, stdout, stderr)
	}

	ws[1].Restart()
	third := filepath.Join(dir, "court-a.release.salts.3.json")
	if code, stdout, stderr := run("--resume"); code != 0 || !strings.Contains(stdout, "in "+third) {
		t.Fatalf("release --resume with the same --out: exit %d\n%s%s", code, stdout, stderr)
	}
	if now, err := os.ReadFile(first); err != nil || !bytes.Equal(now, kept) {
		t.Fatalf("the first salts file changed: %v", err)
	}
	for _, p := range []string{second, third} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f, err := opening.ParseSaltsFile(data)
		if err != nil || len(f.Salts) != 1 || f.Salts[0].Index != st.LedgerIndices["2026-11"] {
			t.Fatalf("%s: %+v %v", p, f, err)
		}
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatalf("no package after the resume: %v", err)
	}
}

// TestInvariantBusyIsAnsweredBeforeTheWitnessesAreAsked: while one
// warrant awaits its press, a second submission is refused as busy, not
// for its witnesses, even with every witness down (they are not asked),
// and no ledger entry is written for it.
func TestInvariantBusyIsAnsweredBeforeTheWitnessesAreAsked(t *testing.T) {
	r, ws := witnessedRig(t, 2, 2, 2*time.Second)
	defer r.stop()
	status, _, eb := r.c.submit(t, r.warrant(t, "W-first"))
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	for _, w := range ws {
		w.Stop()
	}
	size := r.a.Ledger.Size()
	r.expectRefusal(t, r.warrant(t, "W-second"), release.CodeBusy, false)
	if now := r.a.Ledger.Size(); now != size {
		t.Fatalf("the busy refusal wrote %d ledger entries", now-size)
	}
}

// resumeReleasesOnce resumes request id, which must then release one
// package, the TPM having unsealed the share once in the whole test.
func resumeReleasesOnce(t *testing.T, r *rig, id, what string) {
	t.Helper()
	if code, _ := r.c.resume(t, id); code != http.StatusAccepted {
		t.Fatalf("%s: %d", what, code)
	}
	if done := r.c.wait(t, id); done.State != release.StateReleased || len(done.Packages) != 1 {
		t.Fatalf("%s: %+v", what, done)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 1 {
		t.Fatalf("the TPM unsealed the share %d times, want once", n)
	}
}
