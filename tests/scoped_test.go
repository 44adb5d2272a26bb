package tests

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestEndToEndScopedAndShareKeysOnOneFleet: three appliances hold a
// share-mode key ID (2026-11) and a scoped one (2026-12). One warrant names
// 2026-11 and envelope A of 2026-12; two custodians release over HTTP after
// presses. The agency recovers 2026-11's key and opens its envelope, opens
// A from the scoped partials, and cannot open envelope B (same key ID,
// same target) with the same releases, nor any envelope a requester makes
// out of A's key (EscrowOpenRefusesRequesterMadeEnvelopes). The display
// and the officer's terminal say that 2026-11 releases a whole share. Warrants whose
// envelopes do not fit the modes are refused before the summary.
func TestEndToEndScopedAndShareKeysOnOneFleet(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()

	devices, ceremony := enrolledFleet(t, dir)
	mustCLI(t, append([]string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--mode", "share", "--out", p("share")}, ceremony...)...)
	out := mustCLI(t, append([]string{"ceremony", "--key-id", "2026-12", "--threshold", "2", "--mode", "scoped", "--out", p("scoped")}, ceremony...)...)
	if !strings.Contains(out, "scoped mode") {
		t.Fatalf("ceremony: %s", out)
	}
	for _, d := range devices {
		mustCLI(t, d.args("provision", "--bundle", p("share/"+d.id+".bundle.json"))...)
		mustCLI(t, d.args("provision", "--bundle", p("scoped/"+d.id+".bundle.json"))...)
	}
	shareEscrow, scopedEscrow := p("share/escrow-2026-11.pub.json"), p("scoped/escrow-2026-12.pub.json")
	messages := map[string]string{"old": "from november", "a": "envelope A", "b": "envelope B"}
	for name, msg := range messages {
		escrowFile := scopedEscrow
		if name == "old" {
			escrowFile = shareEscrow
		}
		os.WriteFile(p(name+".txt"), []byte(msg), 0o600)
		mustCLI(t, "escrow", "seal", "--escrow", escrowFile, "--target", "alice@example.org", "--in", p(name+".txt"), "--out", p(name+".env"))
	}

	sign := courtFor(t, dir, devices, now)
	mustCLI(t, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	newWarrant := func(serial string, extra ...string) string {
		args := append([]string{"warrant", "new", "--serial", serial, "--docket", "CR-9/2026", "--court", "Test Court",
			"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
			"--custodian", "court-a", "--custodian", "court-b", "--custodian", "court-c", "--recipient", p("agency.pub"),
			"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48 * time.Hour).Format(time.RFC3339),
			"--out", p(serial + ".json")}, extra...)
		mustCLI(t, args...)
		sign(p(serial+".json"), p(serial+".p7s"))
		return p(serial + ".p7s")
	}
	mixed := newWarrant("W-1", "--target", "alice@example.org", "--key-id", "2026-11", "--envelope", p("a.env"))

	var shareReleases, scopedReleases []string
	for _, d := range devices[:2] {
		dm := startDaemon(t, d)
		code, stdout, stderr := releaseWithPress(t, d, dm, mixed, p(d.id+".json"))
		if code != 0 {
			t.Fatalf("release from %s: exit %d\n%s%s\ndaemon:\n%s%s", d.id, code, stdout, stderr, dm.out, dm.errOut)
		}
		if !strings.Contains(dm.out.String(), `Envelopes:  1 ("alice@example.org": 1)`) {
			t.Errorf("the display did not say which envelopes:\n%s", dm.out)
		}
		// The envelope count is not all this release opens: 2026-11 goes
		// out whole, and the display says so for it alone.
		if !strings.Contains(dm.out.String(), "Key ID 2026-11: WHOLE SHARE — opens every message of that key ID") ||
			strings.Contains(dm.out.String(), "Key ID 2026-12: WHOLE SHARE") {
			t.Errorf("the display did not say that 2026-11, and only it, releases a whole share:\n%s", dm.out)
		}
		if !strings.Contains(stdout, "Key ID 2026-11: WHOLE SHARE") {
			t.Errorf("the officer's terminal did not say that 2026-11 releases a whole share:\n%s", stdout)
		}
		checkPackage(t, d, p(d.id+".2026-11.json"))
		checkScopedPackage(t, d, p(d.id+".2026-12.json"))
		shareReleases = append(shareReleases, "--release", p(d.id+".2026-11.json"))
		scopedReleases = append(scopedReleases, "--release", p(d.id+".2026-12.json"))
		refuseMisfits(t, dm, newWarrant, p)
		dm.stop()
	}

	mustCLI(t, append([]string{"recover", "--identity", p("agency.key"), "--escrow", shareEscrow, "--out", p("2026-11.key")}, shareReleases...)...)
	mustCLI(t, "escrow", "open", "--key", p("2026-11.key"), "--in", p("old.env"), "--out", p("old.out"))
	scopedOpen := append([]string{"escrow", "open", "--identity", p("agency.key"), "--escrow", scopedEscrow}, scopedReleases...)
	mustCLI(t, append(scopedOpen, "--in", p("a.env"), "--out", p("a.out"))...)
	for name, want := range map[string]string{"old": messages["old"], "a": messages["a"]} {
		if got, _ := os.ReadFile(p(name + ".out")); !bytes.Equal(got, []byte(want)) {
			t.Errorf("opened %s: %q", name, got)
		}
	}
	t.Run("EscrowOpenRefusesRequesterMadeEnvelopes", func(t *testing.T) {
		// Made out of A's key, whose partials the releases hold: A
		// relabelled to another target would meet them, and α·A or A + β·G
		// would let a requester undo α or β had a warrant named them.
		a, _ := os.ReadFile(p("a.env"))
		b, _ := os.ReadFile(p("b.env"))
		for i, f := range escrowtest.Forgeries(t, a, b) {
			in, out := p(fmt.Sprintf("forged-%d.env", i)), p(fmt.Sprintf("forged-%d.out", i))
			os.WriteFile(in, f.Envelope, 0o644)
			code, _, stderr := cli(t, append(scopedOpen, "--in", in, "--out", out)...)
			if code == 0 || !strings.Contains(stderr, "does not prove it was sealed honestly") || !strings.Contains(stderr, "hint: scoped mode works only") {
				t.Errorf("%s: exit %d\n%s", f.Name, code, stderr)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%s: written out", f.Name)
			}
		}
	})
	code, _, stderr := cli(t, append(scopedOpen, "--in", p("b.env"), "--out", p("b.out"))...)
	if code == 0 || !strings.Contains(stderr, "did not name it") {
		t.Fatalf("envelope B with A's releases: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(p("b.out")); err == nil {
		t.Fatal("envelope B was written out")
	}
	openMany(t, scopedOpen, p, messages["a"])
	code, _, stderr = cli(t, append([]string{"recover", "--identity", p("agency.key"), "--escrow", scopedEscrow, "--out", p("2026-12.key")}, scopedReleases...)...)
	if code == 0 || !strings.Contains(stderr, "never rebuilt") {
		t.Fatalf("recover of a scoped key ID: exit %d\n%s", code, stderr)
	}
}

// openMany opens A and B in one run into a directory, from the releases
// the appliances' TPMs made (blinded, proved partials): A opens, B is
// named as not opened with each custodian's reason, and the report says so.
func openMany(t *testing.T, scopedOpen []string, p func(string) string, messageA string) {
	t.Helper()
	code, stdout, stderr := cli(t, append(scopedOpen, "--json", "--in", p("a.env"), "--in", p("b.env"), "--out-dir", p("opened"))...)
	var report struct {
		Opened, Failed int
		Outcomes       []struct {
			In          string
			Opened      bool
			Error       string
			BadPartials map[string]string `json:"bad_partials"`
		}
	}
	if code == 0 || json.Unmarshal([]byte(stdout), &report) != nil || report.Opened != 1 || report.Failed != 1 || len(report.Outcomes) != 2 {
		t.Fatalf("opening A and B at once: exit %d\n%s\n%s", code, stdout, stderr)
	}
	a, b := report.Outcomes[0], report.Outcomes[1]
	if !a.Opened || a.In != p("a.env") || b.Opened || !strings.Contains(b.Error, "not enough valid partials to open this envelope") ||
		len(b.BadPartials) != 2 || !strings.Contains(b.BadPartials["court-a"], "did not name it") {
		t.Fatalf("outcomes: %+v", report.Outcomes)
	}
	if got, _ := os.ReadFile(p("opened/a")); string(got) != messageA {
		t.Fatalf("opened/a holds %q", got)
	}
	if _, err := os.Stat(p("opened/b")); err == nil {
		t.Fatal("envelope B was written out")
	}
}

// refuseMisfits submits warrants whose envelopes do not fit the key IDs'
// modes: each is refused with its code before the summary, and logged.
func refuseMisfits(t *testing.T, dm *daemon, newWarrant func(string, ...string) string, p func(string) string) {
	t.Helper()
	suffix := strings.TrimPrefix(dm.client.base, "https://127.0.0.1:")
	cases := map[string][]string{
		"no_envelopes":         {"--target", "alice@example.org", "--key-id", "2026-12"},
		"envelopes_not_scoped": {"--envelope", p("old.env")},
	}
	for code, args := range cases {
		w := newWarrant("W-"+code+"-"+suffix, args...)
		// Each refusal keeps its salt beside its own --out.
		exit, _, stderr := dm.release(t, w, p("misfit-"+code+"-"+suffix+".json"))
		if exit == 0 || !strings.Contains(stderr, code) {
			t.Errorf("%s: exit %d\n%s", code, exit, stderr)
		}
	}
}

// checkScopedPackage checks a scoped package: one inclusion proof, of the
// key ID's one release entry in d's ledger, and no per-partial entries.
func checkScopedPackage(t *testing.T, d *device, path string) {
	t.Helper()
	checkPackage(t, d, path)
	data, _ := os.ReadFile(path)
	r, err := escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != escrow.ModeScoped || r.Entries != nil || r.Ledger == nil || len(r.SealedShare) != 0 {
		t.Fatalf("package %s: mode %s, %d per-partial entries, share %d bytes", path, r.Mode, len(r.Entries), len(r.SealedShare))
	}
	verifier, _ := os.ReadFile(filepath.Join(d.data, "ledger-key.pub"))
	e, err := r.Ledger.Check(strings.TrimSpace(string(verifier)))
	if err != nil || e.Kind != ledger.KindRelease || e.KeyID != r.KeyID {
		t.Fatalf("entry proof: %+v, %v", e, err)
	}
}

// TestInvariantPartialsLeaveOnlyAfterDurableLedgerEntries: for a scoped key
// ID, its one release entry is durable before the TPM computes any
// partial; it commits to the warrant and the tree hash and count of its
// envelope list; neither an envelope's point nor its partial crosses the
// TPM bus of the running daemon; and the warrant is not accepted twice.
func TestInvariantPartialsLeaveOnlyAfterDurableLedgerEntries(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	pub := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
	var envs []*escrow.Envelope
	w := draftWarrant("W-scoped", r.agency.Public(), []string{"court-a", "court-z"}, []string{"2026-12"}, time.Now().UTC())
	for _, msg := range []string{"first", "second"} {
		data, err := escrow.Seal(pub, "alice@example.org", []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		env, _ := escrow.ParseEnvelope(data)
		envs = append(envs, env)
		w.Envelopes = append(w.Envelopes, env.Ref())
	}
	p7s := r.court.signDocument(t, w, time.Now())

	var atEntry struct {
		size      int64
		zgens     int
		pkgExists bool
	}
	hook := func(stage, keyID string) {
		if stage != "entry" {
			return
		}
		atEntry.size = r.a.Ledger.Size()
		atEntry.zgens, _ = r.rec.EncryptedResponses(tpm2.TPMCCECDHZGen, 1)
		atEntry.pkgExists = len(storedPackages(t, r.a)) > 0
	}
	r.hook.Store(&hook)
	r.rec.Reset()
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	if !strings.Contains(st.Summary, `Envelopes:  2 ("alice@example.org": 2)`) {
		t.Errorf("the summary does not say which envelopes:\n%s", st.Summary)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateReleased {
		t.Fatalf("release: %+v", st)
	}
	if atEntry.size == 0 || atEntry.zgens != 0 || atEntry.pkgExists {
		t.Fatalf("at the durable entries: %+v (no partial may exist yet)", atEntry)
	}
	code, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-12")
	if code != http.StatusOK {
		t.Fatalf("package: %d %s", code, data)
	}
	pkg, err := escrow.ParseRelease(data)
	if err != nil || pkg.Entries != nil || pkg.Ledger == nil {
		t.Fatalf("package: %v, %d per-partial entries", err, len(pkg.Entries))
	}
	inc := pkg.Ledger
	e, err := inc.Check(r.a.VerifierKey)
	if err != nil || e.Kind != ledger.KindRelease || e.KeyID != "2026-12" || inc.Index >= atEntry.size {
		t.Fatalf("entry: %v %+v (ledger held %d entries when the TPM began)", err, e, atEntry.size)
	}
	list, err := warrant.ListOf(w.Envelopes)
	if err != nil {
		t.Fatal(err)
	}
	subject := append(append(bytes.Clone(p7s), "\x00envelope-list\x00"...), list.TreeHash[:]...)
	subject = append(subject, 0, 0, 0, 0, 0, 0, 0, byte(len(envs))) // the count, 8 bytes big-endian
	if salt, err := r.a.Ledger.Salt(inc.Index); err != nil || !bytes.Equal(ledger.Commit(salt, subject), e.Commitment) {
		t.Fatalf("the entry does not commit to the warrant and its envelope list")
	}
	digest, _ := hex.DecodeString(st.WarrantDigest)
	sealed, err := r.agency.Open(escrow.BatchInfo(digest, "court-a", "2026-12", pkg.Index), pkg.SealedPartials)
	if err != nil {
		t.Fatalf("the agency cannot open the partials: %v", err)
	}
	var pb escrow.PartialsBatch
	if err := json.Unmarshal(sealed, &pb); err != nil || len(pb.Partials) != len(envs) || pkg.Version != escrow.ReleaseVersion {
		t.Fatalf("partials: %v (version %d)", err, pkg.Version)
	}
	points, batch := pb.Split()
	c, _ := pub.Custodian("court-a")
	if err := tpm.VerifyBatch(c.ProofKey, points, batch); err != nil {
		t.Fatalf("the batch: %v", err)
	}
	for i, point := range batch.Partials {
		if !bytes.Equal(points[i], envs[i].Enc) {
			t.Fatalf("partial %d is of another envelope: the warrant's order is not kept", i)
		}
		if r.rec.Seen(envs[i].Enc[1:33]) || r.rec.Seen(point[1:33]) {
			t.Fatalf("envelope %d's point or partial crossed the TPM bus", i)
		}
	}
	r.expectRefusal(t, p7s, release.CodeReplayed, true)
}

// TestDeviceRefusesRequesterMadeEnvelopesNamedByHand: a warrant built and
// signed directly (not through warrant new, which would refuse them)
// naming an envelope a requester made out of another envelope's key —
// α·R, R + β·G, R relabelled to another target or to another key ID the
// device holds, R with another envelope's proof, the header over another
// ciphertext — is refused with envelope_unproven and logged, before the
// summary, and before the TPM reads a PCR or computes anything with the
// envelope. The honest envelope, named the same way, is released.
func TestDeviceRefusesRequesterMadeEnvelopesNamedByHand(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	now := time.Now().UTC()
	r.court.install(t, r.a, now)
	pub := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
	other := provisionLocal(t, r.a, r.tpm, "2026-13", escrow.WithMode(escrow.ModeScoped))
	victim, err := escrow.Seal(pub, "alice@example.org", []byte("envelope B"))
	if err != nil {
		t.Fatal(err)
	}
	own, err := escrow.Seal(other, "bob@example.org", []byte("the requester's own envelope"))
	if err != nil {
		t.Fatal(err)
	}
	named := func(serial string, ref warrant.EnvelopeRef) []byte {
		w := draftWarrant(serial, r.agency.Public(), []string{"court-a", "court-z"}, []string{ref.KeyID}, now)
		w.Targets = []string{ref.Target}
		w.Envelopes = []warrant.EnvelopeRef{ref}
		return r.court.signDocument(t, w, now)
	}
	for i, f := range escrowtest.Forgeries(t, victim, own) {
		r.rec.Reset()
		r.expectRefusal(t, named(fmt.Sprintf("W-forged-%d", i), f.Ref), release.CodeUnprovenEnvelope, true)
		if cc := tpmWorkOn(r.rec, f.Ref.Enc); cc != "" {
			t.Errorf("%s: the TPM was asked %s before the refusal", f.Name, cc)
		}
	}
	honest, err := escrow.ParseEnvelope(victim)
	if err != nil {
		t.Fatal(err)
	}
	r.rec.Reset()
	status, st, eb := r.c.submit(t, named("W-honest", honest.Ref()))
	if status != http.StatusAccepted {
		t.Fatalf("the honest envelope: %d %+v", status, eb)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	if st = r.c.wait(t, st.ID); st.State != release.StateReleased {
		t.Fatalf("the honest envelope: %+v", st)
	}
	code, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-12")
	if pkg, err := escrow.ParseRelease(data); code != http.StatusOK || err != nil || pkg.Mode != escrow.ModeScoped || pkg.Ledger == nil {
		t.Fatalf("the honest envelope's package: %d %v %s", code, err, data)
	}
	if cc := tpmWorkOn(r.rec, honest.Enc); cc != "TPM2_PCR_Read" {
		t.Fatalf("the honest release did not read the PCRs first (%q): the check above proves nothing", cc)
	}
}

// TestBusyRefusedBeforeSealProofsAreChecked: while a warrant awaits its
// press, another verified warrant is refused as busy before its envelopes'
// seal proofs are checked (one per envelope, ~0.1 ms each, 100,000 in a
// list): a warrant naming a forged envelope gets busy, not
// envelope_unproven, and costs no more than any busy refusal.
func TestBusyRefusedBeforeSealProofsAreChecked(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	now := time.Now().UTC()
	r.court.install(t, r.a, now)
	pub := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
	other := provisionLocal(t, r.a, r.tpm, "2026-13", escrow.WithMode(escrow.ModeScoped))
	victim, err := escrow.Seal(pub, "alice@example.org", []byte("envelope B"))
	if err != nil {
		t.Fatal(err)
	}
	own, err := escrow.Seal(other, "bob@example.org", []byte("the requester's own envelope"))
	if err != nil {
		t.Fatal(err)
	}
	forged := escrowtest.Forgeries(t, victim, own)[0].Ref
	w := draftWarrant("W-forged-while-busy", r.agency.Public(), []string{"court-a", "court-z"}, []string{forged.KeyID}, now)
	w.Targets = []string{forged.Target}
	w.Envelopes = []warrant.EnvelopeRef{forged}
	p7s := r.court.signDocument(t, w, now)

	status, first, eb := r.c.submit(t, r.warrant(t, "W-first"))
	if status != http.StatusAccepted {
		t.Fatalf("first: %d %+v", status, eb)
	}
	r.expectRefusal(t, p7s, release.CodeBusy, false)
	if st := r.c.wait(t, first.ID); st.Code != release.CodeNoPress {
		t.Fatalf("first: %+v", st)
	}
	// Alone, the same warrant is refused for its envelope.
	r.expectRefusal(t, p7s, release.CodeUnprovenEnvelope, true)
}

// tpmWorkOn names the first recorded TPM command that works toward a
// release of the envelope whose key is enc: a PCR read, a partial's
// commands, or any command carrying the point. "" means none.
func tpmWorkOn(rec *tpmtest.Recorder, enc []byte) string {
	for _, e := range rec.Exchanges() {
		if len(e.Command) < 10 {
			continue
		}
		switch tpm2.TPMCC(uint32(e.Command[6])<<24 | uint32(e.Command[7])<<16 | uint32(e.Command[8])<<8 | uint32(e.Command[9])) {
		case tpm2.TPMCCPCRRead:
			return "TPM2_PCR_Read"
		case tpm2.TPMCCECDHZGen, tpm2.TPMCCCommit, tpm2.TPMCCSign:
			return "a partial's command"
		}
		if bytes.Contains(e.Command, enc[1:33]) {
			return "a command carrying the envelope's point"
		}
	}
	return ""
}
