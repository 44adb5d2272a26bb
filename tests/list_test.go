package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// scopedFleet starts three appliances, court-a, court-b and court-c, each
// with its daemon, all trusting the first one's court, and provisions a
// 2-of-3 scoped key ID 2026-12 on them.
func scopedFleet(t *testing.T) ([]*rig, *escrow.Public) {
	t.Helper()
	now := time.Now().UTC()
	var rigs []*rig
	var members []escrow.Member
	for _, id := range []string{"court-a", "court-b", "court-c"} {
		r := newRigAs(t, id)
		t.Cleanup(r.stop)
		rigs = append(rigs, r)
		members = append(members, escrow.Member{ID: r.a.ID, EK: r.a.EK, ImportKey: r.a.ImportKey})
		rigs[0].court.install(t, r.a, now)
	}
	pcrs, err := tpm.ReadPCRs(rigs[0].tpm, 8, 9, 11, 12)
	if err != nil {
		t.Fatal(err)
	}
	pub, bundles, err := escrow.Ceremony("2026-12", 2, pcrs, members, escrow.WithMode(escrow.ModeScoped))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rigs {
		data, err := bundles[i].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.a.Provision(r.tpm, data, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return rigs, pub
}

// sealEnvelopes seals n messages to target under pub: the envelopes, and
// their references.
func sealEnvelopes(t testing.TB, pub *escrow.Public, target string, n int) ([][]byte, []warrant.EnvelopeRef) {
	t.Helper()
	envs := make([][]byte, n)
	refs := make([]warrant.EnvelopeRef, n)
	for i := range envs {
		data, err := escrow.Seal(pub, target, fmt.Appendf(nil, "message %d", i))
		if err != nil {
			t.Fatal(err)
		}
		env, err := escrow.ParseEnvelope(data)
		if err != nil {
			t.Fatal(err)
		}
		envs[i], refs[i] = data, env.Ref()
	}
	return envs, refs
}

// listWarrant signs a warrant of r's court for keyIDs and targets that
// names refs by a list, and returns it with the list file.
func listWarrant(t testing.TB, r *rig, serial string, custodians, keyIDs, targets []string, refs []warrant.EnvelopeRef) ([]byte, []byte) {
	t.Helper()
	list, err := warrant.ListOf(refs)
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := list.WriteTo(&file); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	w := draftWarrant(serial, r.agency.Public(), custodians, keyIDs, now)
	w.Targets = targets
	d := list.Digest()
	w.EnvelopeList = &d
	return r.court.signDocument(t, w, now), file.Bytes()
}

// countCommands counts the recorded commands of code cc.
func countCommands(rec *tpmtest.Recorder, cc tpm2.TPMCC) int {
	n := 0
	for _, e := range rec.Exchanges() {
		if len(e.Command) >= 10 && tpm2.TPMCC(uint32(e.Command[6])<<24|uint32(e.Command[7])<<16|uint32(e.Command[8])<<8|uint32(e.Command[9])) == cc {
			n++
		}
	}
	return n
}

// maxFixedReleaseCommands bounds the TPM commands a scoped release of one
// key ID sends besides its 2 per envelope: the ledger's entry, the
// session, the gate, the imports and loads, one proof, the flushes.
const maxFixedReleaseCommands = 60

// releaseWithList submits a warrant with its list, presses, and checks
// that the request took one release entry and one NV increment for its
// one key ID, whatever the list's length. It returns the package.
func releaseWithList(t *testing.T, r *rig, p7s, list []byte, keyID string, named int) *escrow.Release {
	t.Helper()
	size := r.a.Ledger.Size()
	r.rec.Reset()
	status, st, eb := r.c.submitWithList(t, p7s, list)
	if status != http.StatusAccepted {
		t.Fatalf("%s: submit: %d %+v", r.a.ID, status, eb)
	}
	if want := fmt.Sprintf("Envelopes:  %s (", warrant.Thousands(named)); !strings.Contains(st.Summary, want) || !strings.Contains(st.Summary, "List:       "+warrant.Thousands(named)+" entries") {
		t.Errorf("%s: the summary does not count the envelopes (%q):\n%s", r.a.ID, want, st.Summary)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateReleased {
		t.Fatalf("%s: release: %+v", r.a.ID, st)
	}
	if p := st.Progress; p == nil || p.Done != named || p.Total != named || p.KeyID != keyID || p.ETASeconds != 0 {
		t.Errorf("%s: progress after the release: %+v", r.a.ID, p)
	}
	if n := countCommands(r.rec, tpm2.TPMCCNVIncrement); n != 1 {
		t.Errorf("%s: %d NV increments for one request of one key ID, want 1", r.a.ID, n)
	}
	// One batch: a ZGen per envelope, one Commit and one Sign per request,
	// and 2 commands per envelope beside a fixed part.
	zgens, commits, signs := countCommands(r.rec, tpm2.TPMCCECDHZGen), countCommands(r.rec, tpm2.TPMCCCommit), countCommands(r.rec, tpm2.TPMCCSign)
	if zgens != named || commits != 1 || signs != 1 || r.rec.Count()-2*named > maxFixedReleaseCommands {
		t.Errorf("%s: %d TPM commands, %d ECDH_ZGen, %d Commit, %d Sign for %d envelopes; want 2 per envelope and at most %d more, one proof",
			r.a.ID, r.rec.Count(), zgens, commits, signs, named, maxFixedReleaseCommands)
	}
	if r.a.Ledger.Size() != size+1 {
		t.Errorf("%s: the ledger grew by %d entries for one request of one key ID, want 1", r.a.ID, r.a.Ledger.Size()-size)
	}
	code, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/"+keyID)
	if code != http.StatusOK {
		t.Fatalf("%s: package: %d %s", r.a.ID, code, data)
	}
	pkg, err := escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	e, err := pkg.Ledger.Check(r.a.VerifierKey)
	if err != nil || e.Kind != ledger.KindRelease || e.KeyID != keyID || pkg.Ledger.Index != size {
		t.Fatalf("%s: the package's entry: %v %+v", r.a.ID, err, e)
	}
	return pkg
}

// partialEncs opens a scoped package with the agency's key and returns the
// envelopes (their enc) it holds partials for.
func partialEncs(t testing.TB, r *rig, p7s []byte, pkg *escrow.Release) map[string]bool {
	t.Helper()
	content, _ := warrant.Content(p7s)
	digest := warrant.Digest(content)
	data, err := r.agency.Open(escrow.BatchInfo(digest[:], pkg.CustodianID, pkg.KeyID, pkg.Index), pkg.SealedPartials)
	if err != nil {
		t.Fatal(err)
	}
	var batch escrow.PartialsBatch
	if err := json.Unmarshal(data, &batch); err != nil {
		t.Fatal(err)
	}
	partials := batch.Partials
	out := make(map[string]bool, len(partials))
	for _, p := range partials {
		out[string(p.Enc)] = true
	}
	if len(out) != len(partials) {
		t.Fatalf("%s: %d partials for %d envelopes", pkg.CustodianID, len(partials), len(out))
	}
	return out
}

// TestEnvelopeListOf10000OpensExactlyTheNamedEnvelopes2of3: a warrant that
// names 10,000 envelopes of one target by a list is released by two of
// three custodians on swtpm, each with one ledger entry and one NV
// increment; the releases hold partials of exactly the named envelopes;
// the agency opens named ones (first, middle, last), and an envelope of
// the same target and key ID that the list leaves out stays closed.
func TestEnvelopeListOf10000OpensExactlyTheNamedEnvelopes2of3(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	if testing.Short() {
		t.Skip("20,000 partials on swtpm")
	}
	const n = 10_000
	rigs, pub := scopedFleet(t)
	envs, refs := sealEnvelopes(t, pub, "alice@example.org", n+1)
	left := envs[n] // sealed for the same target and key ID, not named
	p7s, list := listWarrant(t, rigs[0], "W-list-10000", []string{"court-a", "court-b", "court-c"}, []string{"2026-12"}, []string{"alice@example.org"}, refs[:n])

	var pkgs []*escrow.Release
	for _, r := range rigs[:2] {
		pkg := releaseWithList(t, r, p7s, list, "2026-12", n)
		got := partialEncs(t, rigs[0], p7s, pkg)
		if len(got) != n {
			t.Fatalf("%s released %d partials, want %d", r.a.ID, len(got), n)
		}
		for _, ref := range refs[:n] {
			if !got[string(ref.Enc)] {
				t.Fatalf("%s released no partial for a named envelope", r.a.ID)
			}
		}
		if got[string(refs[n].Enc)] {
			t.Fatalf("%s released a partial for the envelope the list leaves out", r.a.ID)
		}
		pkgs = append(pkgs, pkg)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		_, pt, err := escrow.OpenScoped(rigs[0].agency, pub, pkgs, envs[i])
		if err != nil || string(pt) != fmt.Sprintf("message %d", i) {
			t.Fatalf("named envelope %d: %q, %v", i, pt, err)
		}
	}
	if _, pt, err := escrow.OpenScoped(rigs[0].agency, pub, pkgs, left); err == nil || pt != nil || !errors.Is(err, escrow.ErrNotEnoughShares) {
		t.Fatalf("the envelope the list leaves out opened (or failed otherwise): %v", err)
	}
	// The third custodian was not asked: its ledger holds no release.
	if n := rigs[2].releaseEntries(t); n != 0 {
		t.Fatalf("court-c holds %d release entries", n)
	}
}

// TestEnvelopeListRefusedBeforeAnyTPMWork: each way a list can be wrong is
// refused with its own code, before the TPM reads a PCR, computes a
// partial or sees a named envelope's point; a list that does not parse is
// counted (nobody accountable stands behind it yet), one that parses but is
// not the signed warrant's is logged. The right list is then released with
// one entry and one NV increment.
func TestEnvelopeListRefusedBeforeAnyTPMWork(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	pub := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
	_, refs := sealEnvelopes(t, pub, "alice@example.org", 300)
	_, bobs := sealEnvelopes(t, pub, "bob@example.org", 1)
	custodians, keyIDs, alice := []string{"court-a", "court-z"}, []string{"2026-12"}, []string{"alice@example.org"}
	p7s, list := listWarrant(t, r, "W-list", custodians, keyIDs, alice, refs)
	lines := strings.SplitAfter(string(list), "\n")

	withKeyID := append(refs[:299:299], refs[299])
	withKeyID[299].KeyID = "2026-11" // held here, not named by the warrant
	foreignKey, foreignKeyList := listWarrant(t, r, "W-list-key", custodians, keyIDs, alice, withKeyID)
	foreignTarget, foreignTargetList := listWarrant(t, r, "W-list-target", custodians, keyIDs, alice, append(refs[:299:299], bobs[0]))
	_, shorter := listWarrant(t, r, "W-list-other", custodians, keyIDs, alice, refs[:299])
	inline := draftWarrant("W-inline", r.agency.Public(), custodians, keyIDs, time.Now().UTC())
	inline.Targets, inline.Envelopes = alice, refs[:1]
	inlineP7s := r.court.signDocument(t, inline, time.Now())

	cases := []struct {
		name      string
		p7s, list []byte
		code      release.Code
		logged    bool
	}{
		{"another list", p7s, shorter, release.Code(warrant.ReasonListMismatch), true},
		// The same count, another tree hash; this warrant was refused for this
		// code already, so the second refusal is counted, not logged again.
		{"the same entries in another order", p7s, []byte(lines[0] + lines[2] + lines[1] + strings.Join(lines[3:], "")), release.Code(warrant.ReasonListMismatch), false},
		{"an entry of another key ID", foreignKey, foreignKeyList, release.Code(warrant.ReasonListKeyID), true},
		{"an entry of another target", foreignTarget, foreignTargetList, release.Code(warrant.ReasonListTarget), true},
		{"no list", p7s, nil, release.Code(warrant.ReasonListMissing), true},
		{"a list beside an inline warrant", inlineP7s, list, release.Code(warrant.ReasonListUnexpected), true},
		{"a duplicate", p7s, []byte(lines[0] + strings.Join(lines[1:300], "") + lines[5]), release.Code(warrant.ReasonListDuplicate), false},
		{"cut off", p7s, list[:len(list)-100], release.Code(warrant.ReasonListTruncated), false},
		{"entries missing", p7s, []byte(strings.Join(lines[:200], "")), release.Code(warrant.ReasonListTruncated), false},
		{"oversized", p7s, []byte(fmt.Sprintf("custodian envelope list v1 %d\n", warrant.MaxListEntries+1) + strings.Join(lines[1:], "")), release.Code(warrant.ReasonListTooLarge), false},
		{"not canonical", p7s, []byte(lines[0] + strings.Replace(lines[1], `{"key_id"`, `{ "key_id"`, 1) + strings.Join(lines[2:], "")), release.Code(warrant.ReasonListMalformed), false},
	}
	for _, c := range cases {
		r.rec.Reset()
		r.expectRefusalWithList(t, c.p7s, c.list, c.code, c.logged)
		for _, ref := range []warrant.EnvelopeRef{refs[0], refs[299], bobs[0]} {
			if cc := tpmWorkOn(r.rec, ref.Enc); cc != "" {
				t.Errorf("%s: the TPM was asked %s before the refusal", c.name, cc)
			}
		}
	}
	pkg := releaseWithList(t, r, p7s, list, "2026-12", 300)
	if got := partialEncs(t, r, p7s, pkg); len(got) != 300 {
		t.Fatalf("%d partials, want 300", len(got))
	}
}

// TestWarrantNewWritesAListAboveTheInlineCap: warrant new given 200
// envelope files (more than a warrant holds inline) writes them to a list
// file beside the warrant and names the list by count and tree hash;
// warrant show counts them per target with the list; custodian release
// submits warrant and list, prints the progress, and saves a package with
// 200 partials.
func TestWarrantNewWritesAListAboveTheInlineCap(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	pub := provisionScoped(t, d, "2026-12")
	envs, _ := sealEnvelopes(t, pub, "alice@example.org", warrant.MaxInlineEnvelopes+8)
	os.Mkdir(p("envs"), 0o700)
	for i, env := range envs {
		os.WriteFile(p(fmt.Sprintf("envs/%04d.env", i)), env, 0o600)
	}
	mustCLI(t, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	out := mustCLI(t, "warrant", "new", "--serial", "W-dir", "--docket", "CR-9/2026", "--court", testCourt,
		"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
		"--custodian", "court-a", "--custodian", "court-z", "--recipient", p("agency.pub"), "--envelope-dir", p("envs"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--out", p("w.json"))
	if !strings.Contains(out, "wrote "+p("w.envelopes")+": the list of the 200 envelopes") {
		t.Fatalf("warrant new did not write the list:\n%s", out)
	}
	// A list file that exists is never replaced, and the hint names its flag.
	code, _, stderr := cli(t, "warrant", "new", "--serial", "W-dir-2", "--docket", "CR-9/2026", "--court", testCourt,
		"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
		"--custodian", "court-a", "--custodian", "court-z", "--recipient", p("agency.pub"), "--envelope-dir", p("envs"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--envelope-list", p("w.envelopes"), "--out", p("w2.json"))
	if code == 0 || !strings.Contains(stderr, "hint: remove it first or choose another --envelope-list") {
		t.Fatalf("warrant new over an existing list: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(p("w2.json")); err == nil {
		t.Fatal("warrant new wrote the warrant though its list was refused")
	}
	data, _ := os.ReadFile(p("w.json"))
	w, err := warrant.Parse(data, 0)
	if err != nil || w.Envelopes != nil || w.EnvelopeList == nil || w.EnvelopeList.Count != 200 || !slices.Equal(w.KeyIDs, []string{"2026-12"}) {
		t.Fatalf("the warrant does not name the list: %v %+v", err, w)
	}
	os.WriteFile(p("w.p7s"), c.signDocument(t, w, time.Now()), 0o644)
	if out := mustCLI(t, "warrant", "show", "--in", p("w.p7s")); !strings.Contains(out, "List:       200 entries, tree hash") {
		t.Errorf("warrant show without the list:\n%s", out)
	}
	if out := mustCLI(t, "warrant", "show", "--in", p("w.p7s"), "--envelope-list", p("w.envelopes")); !strings.Contains(out, `Envelopes:  200 ("alice@example.org": 200)`) {
		t.Errorf("warrant show with the list:\n%s", out)
	}

	dm := startDaemon(t, d)
	if code, _, stderr := cli(t, "release", "--server", dm.client.base, "--warrant", p("w.p7s"), "--out", p("nolist.json")); code == 0 || !strings.Contains(stderr, "--envelope-list") {
		t.Fatalf("release without the list: exit %d %s", code, stderr)
	}
	code, stdout, stderr := releaseWithPress(t, d, dm, p("w.p7s"), p("release.json"), append(dm.officerArgs(), "--envelope-list", p("w.envelopes"))...)
	if code != 0 {
		t.Fatalf("release: exit %d\n%s%s\ndaemon:\n%s%s", code, stdout, stderr, dm.out, dm.errOut)
	}
	if !strings.Contains(stdout, "partial 200 of 200 (key ID 2026-12)") {
		t.Errorf("release did not show the progress:\n%s", stdout)
	}
	if !strings.Contains(dm.out.String(), ": partial 200 of 200 (key ID 2026-12)") {
		t.Errorf("the display did not show the progress:\n%s", dm.out)
	}
	checkScopedPackage(t, d, p("release.json"))
}

// TestEnvelopeListOfTwoKeyIDsTakesOneEntryPerKeyID: a list naming
// envelopes of two scoped key IDs is released with exactly two release
// entries and two NV increments, one per key ID, each package holding the
// partials of its own key ID's envelopes only.
func TestEnvelopeListOfTwoKeyIDsTakesOneEntryPerKeyID(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	december := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
	january := provisionLocal(t, r.a, r.tpm, "2027-01", escrow.WithMode(escrow.ModeScoped))
	_, decRefs := sealEnvelopes(t, december, "alice@example.org", 260)
	_, janRefs := sealEnvelopes(t, january, "alice@example.org", 40)
	p7s, list := listWarrant(t, r, "W-two-keys", []string{"court-a", "court-z"}, []string{"2026-12", "2027-01"}, []string{"alice@example.org"},
		append(append([]warrant.EnvelopeRef{}, decRefs...), janRefs...))

	size := r.a.Ledger.Size()
	r.rec.Reset()
	status, st, eb := r.c.submitWithList(t, p7s, list)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	if st = r.c.wait(t, st.ID); st.State != release.StateReleased || len(st.Packages) != 2 {
		t.Fatalf("release: %+v", st)
	}
	if n := countCommands(r.rec, tpm2.TPMCCNVIncrement); n != 2 {
		t.Errorf("%d NV increments for two key IDs, want 2", n)
	}
	if got := r.a.Ledger.Size() - size; got != 2 {
		t.Errorf("%d ledger entries for two key IDs, want 2", got)
	}
	for keyID, refs := range map[string][]warrant.EnvelopeRef{"2026-12": decRefs, "2027-01": janRefs} {
		code, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/"+keyID)
		pkg, err := escrow.ParseRelease(data)
		if code != http.StatusOK || err != nil {
			t.Fatalf("%s: %d %v", keyID, code, err)
		}
		got := partialEncs(t, r, p7s, pkg)
		if len(got) != len(refs) {
			t.Fatalf("%s: %d partials, want %d", keyID, len(got), len(refs))
		}
		for _, ref := range refs {
			if !got[string(ref.Enc)] {
				t.Fatalf("%s: a named envelope has no partial", keyID)
			}
		}
	}
}
