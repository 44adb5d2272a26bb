package tests

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// revealSetup is an appliance on swtpm serving over TLS with officers'
// certificates, its court, and a released warrant whose salts the
// officer's client kept.
type revealSetup struct {
	d              *device
	dm             *daemon
	c              *court
	dir            string
	p7s, salts     string
	remote         []string // an auditor's ledger flags: --server, --verifier-key, --ca
	request, index string
}

var (
	requestRE = regexp.MustCompile(`\(request ([0-9a-f]{32})\)`)
	keptRE    = regexp.MustCompile(`kept the salts of ledger entries (\d+) in (\S+):`)
)

func newRevealSetup(t *testing.T) *revealSetup {
	t.Helper()
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	dm := startDaemon(t, d)
	s := &revealSetup{d: d, dm: dm, c: c, dir: t.TempDir()}
	s.remote = append([]string{"--server", dm.client.base, "--verifier-key", filepath.Join(d.data, "ledger-key.pub")}, dm.auditorArgs()...)
	s.p7s = s.signed(t, "W-reveal", "court-a")
	code, stdout, stderr := releaseWithPress(t, d, dm, s.p7s, filepath.Join(s.dir, "r.release.json"))
	if code != 0 {
		t.Fatalf("release: %d\n%s%s", code, stdout, stderr)
	}
	m := keptRE.FindStringSubmatch(stdout)
	if m == nil || m[2] != filepath.Join(s.dir, "r.release.salts.json") {
		t.Fatalf("release kept no salts beside its package:\n%s", stdout)
	}
	s.index, s.salts = m[1], m[2]
	s.request = requestRE.FindStringSubmatch(stdout)[1]
	return s
}

// signed writes a warrant of the court for custodians, key ID 2026-11.
func (s *revealSetup) signed(t *testing.T, serial string, custodians ...string) string {
	t.Helper()
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, serial+".p7s")
	if err := os.WriteFile(path, s.c.sign(t, serial, agency.Public(), custodians, []string{"2026-11"}, time.Now().UTC()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// courtFiles writes the court's root and a CRL in force now, as the court
// publishes them.
func (s *revealSetup) courtFiles(t *testing.T) []string {
	t.Helper()
	now := time.Now().UTC()
	roots, crl := filepath.Join(s.dir, "court-roots.pem"), filepath.Join(s.dir, "court.crl")
	os.WriteFile(roots, trusttest.PEM(s.c.root.Cert), 0o644)
	os.WriteFile(crl, trusttest.CRLPEM(s.c.root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))), 0o644)
	return []string{"--roots", roots, "--court", testCourt, "--crl", crl}
}

func (s *revealSetup) reveal(t *testing.T, salts, p7s, out string, extra ...string) (int, string, string) {
	t.Helper()
	args := append([]string{"ledger", "reveal", "--salts", salts, "--warrant", p7s, "--out", out}, s.remote...)
	return cli(t, append(args, extra...)...)
}

func (s *revealSetup) verifyOpening(t *testing.T, in string, extra ...string) (int, string, string) {
	t.Helper()
	args := []string{"ledger", "verify-opening", "--in", in, "--verifier-key", filepath.Join(s.d.data, "ledger-key.pub")}
	return cli(t, append(args, extra...)...)
}

// TestRevealedReleaseVerifies: a real release on swtpm, its salt kept by
// the officer's client; the court's reveal writes an opening that anyone
// checks with the pinned key and the court's roots, offline, and the
// --json output names the court and docket.
func TestRevealedReleaseVerifies(t *testing.T) {
	s := newRevealSetup(t)
	info, err := os.Stat(s.salts)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("salts file: %v %v, want mode 0600", info, err)
	}
	out := filepath.Join(s.dir, "opening.json")
	if code, stdout, stderr := s.reveal(t, s.salts, s.p7s, out); code != 0 || !strings.Contains(stdout, "opened entry "+s.index+" of custodian/court-a (release") {
		t.Fatalf("reveal: %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr := s.verifyOpening(t, out, s.courtFiles(t)...)
	if code != 0 || !strings.Contains(stdout, "entry "+s.index+" of custodian/court-a") || !strings.Contains(stdout, "docket CR-1/2026") ||
		!strings.Contains(stdout, "verifies against the court's roots as of the entry's time") {
		t.Fatalf("verify-opening: %d\n%s%s", code, stdout, stderr)
	}
	// Without the court's roots it opens, and says the court was not checked.
	if code, stdout, _ := s.verifyOpening(t, out); code != 0 || !strings.Contains(stdout, "the court was not checked") {
		t.Fatalf("verify-opening without roots: %d\n%s", code, stdout)
	}
	var got struct {
		Entry struct {
			Index int64  `json:"index"`
			Kind  string `json:"kind"`
		} `json:"entry"`
		Court, Docket string
		CourtVerified bool `json:"court_verified"`
	}
	stdout = mustCLI(t, append([]string{"--json", "ledger", "verify-opening", "--in", out, "--verifier-key", filepath.Join(s.d.data, "ledger-key.pub")}, s.courtFiles(t)...)...)
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || fmt.Sprint(got.Entry.Index) != s.index || got.Entry.Kind != "release" ||
		got.Court != testCourt || got.Docket != "CR-1/2026" || !got.CourtVerified {
		t.Fatalf("--json: %+v %v\n%s", got, err, stdout)
	}
	// Another court's roots do not vouch for the warrant.
	other := &revealSetup{c: newCourt(t, time.Now()), dir: t.TempDir()}
	if code, _, stderr := s.verifyOpening(t, out, other.courtFiles(t)...); code == 0 || !strings.Contains(stderr, "does not verify against the court's roots") {
		t.Fatalf("another court's roots: %d %s", code, stderr)
	}
}

// TestRevealRefusesAWrongSalt: a salts file whose salt for the entry was
// changed writes no opening; nor does one of another warrant.
func TestRevealRefusesAWrongSalt(t *testing.T) {
	s := newRevealSetup(t)
	data, err := os.ReadFile(s.salts)
	if err != nil {
		t.Fatal(err)
	}
	var f opening.SaltsFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	salt, _ := hex.DecodeString(f.Salts[0].Salt)
	salt[31] ^= 1
	f.Salts[0].Salt = hex.EncodeToString(salt)
	wrong := filepath.Join(s.dir, "wrong.salts.json")
	b, _ := f.Marshal()
	os.WriteFile(wrong, b, 0o600)
	out := filepath.Join(s.dir, "opening.json")
	code, _, stderr := s.reveal(t, wrong, s.p7s, out)
	if code == 0 || !strings.Contains(stderr, "does not open it") {
		t.Fatalf("wrong salt: %d %s", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("an opening was written for a wrong salt")
	}
	// The salts file of one warrant with another warrant.
	other := s.signed(t, "W-other", "court-a")
	if code, _, stderr := s.reveal(t, s.salts, other, out); code == 0 || !strings.Contains(stderr, "the salts file is for the warrant of digest") {
		t.Fatalf("another warrant: %d %s", code, stderr)
	}
	// An opening edited to carry the wrong salt is refused by anyone.
	if code, _, _ := s.reveal(t, s.salts, s.p7s, out); code != 0 {
		t.Fatal("reveal of the right salt failed")
	}
	doc, _ := os.ReadFile(out)
	edited := bytes.Replace(doc, []byte(saltOf(t, s.salts)), []byte(f.Salts[0].Salt), 1)
	if bytes.Equal(edited, doc) {
		t.Fatal("the opening does not carry the salt")
	}
	bad := filepath.Join(s.dir, "bad-opening.json")
	os.WriteFile(bad, edited, 0o644)
	if code, _, stderr := s.verifyOpening(t, bad); code == 0 || !strings.Contains(stderr, "do not open the entry's commitment") {
		t.Fatalf("opening with a wrong salt: %d %s", code, stderr)
	}
}

func saltOf(t *testing.T, path string) string {
	t.Helper()
	data, _ := os.ReadFile(path)
	f, err := opening.ParseSaltsFile(data)
	if err != nil {
		t.Fatal(err)
	}
	return f.Salts[0].Salt
}

// TestOpeningForAnotherEntryIsRefused: the officer's client keeps the
// salt of a refusal entry too (a warrant not addressed to this
// custodian); an opening moved onto that entry, with its true proof, is
// refused, as is one naming an entry past the checkpoint's tree.
func TestOpeningForAnotherEntryIsRefused(t *testing.T) {
	s := newRevealSetup(t)
	refusedP7s := s.signed(t, "W-elsewhere", "court-z")
	refusedOut := filepath.Join(s.dir, "refused.release.json")
	code, stdout, stderr := cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", refusedP7s, "--out", refusedOut}, s.dm.officerArgs()...)...)
	m := keptRE.FindStringSubmatch(stdout)
	if code == 0 || !strings.Contains(stderr, "not_addressed") || m == nil {
		t.Fatalf("refused release: %d\n%s%s", code, stdout, stderr)
	}
	// The refusal's own opening verifies.
	refusalOpening := filepath.Join(s.dir, "refusal-opening.json")
	if code, stdout, stderr := s.reveal(t, m[2], refusedP7s, refusalOpening); code != 0 || !strings.Contains(stdout, "(refusal") {
		t.Fatalf("reveal of the refusal: %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := s.verifyOpening(t, refusalOpening, s.courtFiles(t)...); code != 0 || !strings.Contains(stdout, "reason not_addressed") {
		t.Fatalf("verify-opening of the refusal: %d\n%s%s", code, stdout, stderr)
	}
	// The release's opening moved onto the refusal's entry.
	out := filepath.Join(s.dir, "opening.json")
	if code, _, stderr := s.reveal(t, s.salts, s.p7s, out); code != 0 {
		t.Fatalf("reveal: %s", stderr)
	}
	var release, refusal map[string]any
	readJSON(t, out, &release)
	readJSON(t, refusalOpening, &refusal)
	for _, k := range []string{"index", "entry", "proof", "checkpoint"} {
		release[k] = refusal[k]
	}
	moved := writeJSON(t, s.dir, "moved.json", release)
	if code, _, stderr := s.verifyOpening(t, moved); code == 0 || !strings.Contains(stderr, "committed to another salt or another warrant") {
		t.Fatalf("opening moved to another entry: %d %s", code, stderr)
	}
	// The index alone moved: the proof is not that entry's.
	readJSON(t, out, &release)
	release["index"] = refusal["index"]
	if code, _, stderr := s.verifyOpening(t, writeJSON(t, s.dir, "index.json", release)); code == 0 || !strings.Contains(stderr, "not in the appliance's ledger") {
		t.Fatalf("index moved: %d %s", code, stderr)
	}
	release["index"] = 1 << 40
	if code, _, stderr := s.verifyOpening(t, writeJSON(t, s.dir, "past.json", release)); code == 0 || !strings.Contains(stderr, "past the checkpoint") {
		t.Fatalf("index past the tree: %d %s", code, stderr)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestInvariantSaltsGoOnlyToTheOfficersChannel: the officer's client gets
// its request's salts with its status; the same status without an
// officer's certificate is refused and carries none, and no public route
// (checkpoint, entries, consistency, tiles, health) carries a salt, in
// hex, base64 or raw bytes.
func TestInvariantSaltsGoOnlyToTheOfficersChannel(t *testing.T) {
	s := newRevealSetup(t)
	salt := saltOf(t, s.salts)
	raw, _ := hex.DecodeString(salt)
	var st release.Status
	s.dm.client.getJSON(t, "/v1/requests/"+s.request, &st)
	if len(st.Salts) != 1 || st.Salts[0].Salt != salt || fmt.Sprint(st.Salts[0].Index) != s.index {
		t.Fatalf("the officer's status: salts %+v, want entry %s's", st.Salts, s.index)
	}
	anyone := &client{base: s.dm.client.base, http: s.dm.site.httpClient(false)}
	paths := []string{"/v1/requests/" + s.request, "/v1/health", "/v1/checkpoint", "/v1/entries/" + s.index,
		"/v1/entries?from=0&to=" + s.index, "/v1/consistency?old=1&size=2", "/v1/tlog/checkpoint",
		"/v1/tlog/tile/0/000.p/" + fmt.Sprint(atoi(t, s.index)+1), "/v1/tlog/tile/entries/000.p/" + fmt.Sprint(atoi(t, s.index)+1)}
	for _, p := range paths {
		code, body := anyone.get(t, p)
		if p == paths[0] && code == http.StatusOK {
			t.Errorf("GET %s without an officer's certificate: %d", p, code)
		}
		if p != paths[0] && code != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
		for _, form := range [][]byte{[]byte(salt), []byte(base64.StdEncoding.EncodeToString(raw)), raw} {
			if bytes.Contains(body, form) {
				t.Errorf("GET %s without an officer's certificate carries the salt", p)
			}
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestInvariantNoSaltsWithoutOfficerCertificates: an appliance that takes
// warrants from anyone (no --client-ca) gives salts to no one.
func TestInvariantNoSaltsWithoutOfficerCertificates(t *testing.T) {
	d, p7s := networkDevice(t, "W-open")
	dm := startDaemon(t, d, "--insecure-http")
	dir := t.TempDir()
	code, stdout, stderr := releaseWithPress(t, d, dm, p7s, filepath.Join(dir, "r.release.json"))
	if code != 0 {
		t.Fatalf("release: %d\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout, "kept the salts") {
		t.Fatalf("salts kept from an appliance without officers' certificates:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "r.release.salts.json")); err == nil {
		t.Fatal("a salts file was written")
	}
	var st release.Status
	dm.client.getJSON(t, "/v1/requests/"+requestRE.FindStringSubmatch(stdout)[1], &st)
	if st.State != release.StateReleased || len(st.Salts) != 0 {
		t.Fatalf("status: %s with salts %+v", st.State, st.Salts)
	}
}

// TestRevealScopedEntriesOfAListWarrant: a warrant naming envelopes of two
// scoped key IDs by a list file gets two release entries, each committing
// to the list; the officer's status carries both salts. Reveal needs
// --index to choose one and the list file to open it; the opening shows
// the list's count and its key ID.
func TestRevealScopedEntriesOfAListWarrant(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	december := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
	january := provisionLocal(t, r.a, r.tpm, "2027-01", escrow.WithMode(escrow.ModeScoped))
	_, decRefs := sealEnvelopes(t, december, "alice@example.org", 3)
	_, janRefs := sealEnvelopes(t, january, "alice@example.org", 2)
	p7s, list := listWarrant(t, r, "W-list-reveal", []string{"court-a"}, []string{"2026-12", "2027-01"}, []string{"alice@example.org"},
		append(append([]warrant.EnvelopeRef{}, decRefs...), janRefs...))
	status, st, eb := r.c.submitWithList(t, p7s, list)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	if st = r.c.wait(t, st.ID); st.State != release.StateReleased || len(st.Salts) != 2 {
		t.Fatalf("release: %s, salts %+v", st.State, st.Salts)
	}
	dir := t.TempDir()
	content, err := warrant.Content(p7s)
	if err != nil {
		t.Fatal(err)
	}
	digest := warrant.Digest(content)
	f := &opening.SaltsFile{Version: opening.Version, Server: r.c.base, WarrantDigest: hex.EncodeToString(digest[:]), Salts: st.Salts}
	data, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"w.p7s": p7s, "w.envelopes": list, "w.salts.json": data}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	at := func(name string) string { return filepath.Join(dir, name) }
	key := filepath.Join(r.d.data, "ledger-key.pub")
	reveal := func(extra ...string) (int, string, string) {
		return cli(t, append([]string{"ledger", "reveal", "--salts", at("w.salts.json"), "--warrant", at("w.p7s"), "--out", at("opening.json"),
			"--server", r.c.base, "--ca", r.site.ServerCA, "--verifier-key", key}, extra...)...)
	}
	if code, _, stderr := reveal(); code == 0 || !strings.Contains(stderr, "holds several entries' salts") {
		t.Fatalf("without --index: %d %s", code, stderr)
	}
	if code, _, stderr := reveal("--index", "99999"); code == 0 || !strings.Contains(stderr, "holds no salt for entry 99999") {
		t.Fatalf("an index the file does not hold: %d %s", code, stderr)
	}
	december0 := fmt.Sprint(st.LedgerIndices["2026-12"])
	if code, _, stderr := reveal("--index", december0); code == 0 || !strings.Contains(stderr, "add --envelope-list") {
		t.Fatalf("without the list: %d %s", code, stderr)
	}
	if code, stdout, stderr := reveal("--index", december0, "--envelope-list", at("w.envelopes")); code != 0 {
		t.Fatalf("reveal: %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr := cli(t, "ledger", "verify-opening", "--in", at("opening.json"), "--verifier-key", key)
	if code != 0 || !strings.Contains(stdout, "key ID 2026-12") || !strings.Contains(stdout, "envelope list: the warrant's whole list, 5 envelopes of every key ID it names") {
		t.Fatalf("verify-opening: %d\n%s%s", code, stdout, stderr)
	}
}

// TestInvariantReplayRefusalNamesNoOtherEntry: whoever resubmits a copy of
// a warrant the court already used, with an officer's certificate or (on
// an appliance without --client-ca) none, learns not which entry used it,
// and gets no salt of the refusal entry committing to it: with one, it
// could publish the warrant's use before the court decides to.
func TestInvariantReplayRefusalNamesNoOtherEntry(t *testing.T) {
	s := newRevealSetup(t)
	out := filepath.Join(t.TempDir(), "copy.release.json")
	resubmit := func() (int, string, string) {
		return cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", s.p7s, "--out", out}, s.dm.officerArgs()...)...)
	}
	for round := 1; round <= 2; round++ { // the second is counted, not logged
		code, stdout, stderr := resubmit()
		if code == 0 || !strings.Contains(stderr, "replayed") || !strings.Contains(stderr, "already used on this custodian") {
			t.Fatalf("resubmission %d: exit %d\n%s%s", round, code, stdout, stderr)
		}
		if strings.Contains(stderr, "ledger entry "+s.index+")") || strings.Contains(stderr, "(ledger entry "+s.index) {
			t.Errorf("resubmission %d names the court's release entry %s:\n%s", round, s.index, stderr)
		}
		if keptRE.MatchString(stdout) {
			t.Errorf("resubmission %d was given a salt:\n%s", round, stdout)
		}
		if _, err := os.Stat(strings.TrimSuffix(out, ".json") + ".salts.json"); err == nil {
			t.Errorf("resubmission %d wrote a salts file", round)
		}
	}
}

// TestInvariantReplayRefusalNamesNoOtherEntryWithoutCertificates: on an
// appliance that takes warrants from anyone, a resubmitted copy learns
// nothing of the entry that used it, logged or counted.
func TestInvariantReplayRefusalNamesNoOtherEntryWithoutCertificates(t *testing.T) {
	d, p7s := networkDevice(t, "W-open-oracle")
	dm := startDaemon(t, d, "--insecure-http")
	dir := t.TempDir()
	code, stdout, stderr := releaseWithPress(t, d, dm, p7s, filepath.Join(dir, "r.release.json"))
	idx := regexp.MustCompile(`ledger entry (\d+)\)`).FindStringSubmatch(stdout)
	if code != 0 || idx == nil {
		t.Fatalf("release: %d\n%s%s", code, stdout, stderr)
	}
	for i, name := range []string{"x.json", "y.json"} {
		code, _, stderr := cli(t, "release", "--server", dm.client.base, "--insecure-http", "--warrant", p7s, "--out", filepath.Join(dir, name))
		if code == 0 || !strings.Contains(stderr, "already used on this custodian") {
			t.Fatalf("anonymous resubmission %d: exit %d\n%s", i+1, code, stderr)
		}
		if strings.Contains(stderr, "(ledger entry "+idx[1]+")") {
			t.Errorf("anonymous resubmission %d names the release entry %s:\n%s", i+1, idx[1], stderr)
		}
	}
}

// TestOpeningOfARefusalSaysOnlyThatItWasSubmitted: the opening of a
// refusal entry (its salt went to whoever submitted the bytes) says it
// shows a submission and refusal at a time, not that the court published
// it; every opening says what was checked of the court.
func TestOpeningOfARefusalSaysOnlyThatItWasSubmitted(t *testing.T) {
	s := newRevealSetup(t)
	p7s := s.signed(t, "W-elsewhere", "court-z")
	code, stdout, stderr := cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", p7s, "--out", filepath.Join(s.dir, "z.release.json")}, s.dm.officerArgs()...)...)
	m := keptRE.FindStringSubmatch(stdout)
	if code == 0 || m == nil {
		t.Fatalf("refused release: %d\n%s%s", code, stdout, stderr)
	}
	op := filepath.Join(s.dir, "refusal-opening.json")
	if code, stdout, stderr := s.reveal(t, m[2], p7s, op); code != 0 {
		t.Fatalf("reveal: %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = s.verifyOpening(t, op, s.courtFiles(t)...)
	if code != 0 {
		t.Fatalf("verify-opening: %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"shows only that a copy of this warrant was submitted to custodian court-a and refused at",
		"not necessarily the court", "does not show that the court submitted or published it",
		"the default approval policy", "not the policy the appliance enforced"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("verify-opening of a refusal does not say %q:\n%s", want, stdout)
		}
	}
	// The release's own opening makes no such disclaimer.
	rel := filepath.Join(s.dir, "release-opening.json")
	if code, stdout, stderr := s.reveal(t, s.salts, s.p7s, rel); code != 0 {
		t.Fatalf("reveal: %d\n%s%s", code, stdout, stderr)
	}
	if _, stdout, _ := s.verifyOpening(t, rel); !strings.Contains(stdout, "logged a release of this warrant") || strings.Contains(stdout, "refused at") {
		t.Errorf("verify-opening of a release:\n%s", stdout)
	}
}

// TestReleaseRefusesSaltsOutOverThePackage: --salts-out equal to --out is
// refused before anything is submitted, and an existing salts file (a
// refusal's salt kept earlier, which cannot be asked for again) is never
// replaced.
func TestReleaseRefusesSaltsOutOverThePackage(t *testing.T) {
	s := newRevealSetup(t)
	p7s := s.signed(t, "W-same-path", "court-a")
	out := filepath.Join(s.dir, "same.release.json")
	code, stdout, stderr := cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", p7s, "--out", out, "--salts-out", out}, s.dm.officerArgs()...)...)
	if code == 0 || !strings.Contains(stderr, "is also where the package of key ID 2026-11 goes") || strings.Contains(stdout, "press the button") {
		t.Fatalf("--salts-out equal to --out: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a file was written at --out")
	}
	// The salts file of the first release exists: a second release to the
	// same --out is refused before it is submitted, the file unchanged.
	before, err := os.ReadFile(s.salts)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", p7s, "--out", filepath.Join(s.dir, "r.release.json")}, s.dm.officerArgs()...)...)
	if code == 0 || !strings.Contains(stderr, "choose another --salts-out") || strings.Contains(stdout, "press the button") {
		t.Fatalf("release over an existing salts file: exit %d\n%s%s", code, stdout, stderr)
	}
	if after, _ := os.ReadFile(s.salts); !bytes.Equal(before, after) {
		t.Fatal("the existing salts file was changed")
	}
}

// TestInvariantSaltsGoOnlyToTheSubmittingCertificate: another officer's
// certificate of the same officers' CA (another court's officer) that
// holds the request's ID is given its status but none of its salts, also
// after a restart, when the status is read from the request's record;
// the submitting certificate still gets them.
func TestInvariantSaltsGoOnlyToTheSubmittingCertificate(t *testing.T) {
	s := newRevealSetup(t)
	site := s.dm.site
	other, err := tls.LoadX509KeyPair(site.OtherCert, site.OtherKey)
	if err != nil {
		t.Fatal(err)
	}
	otherClient := func(base string) *client {
		cfg := &tls.Config{RootCAs: site.roots, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{other}}
		return &client{base: base, http: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}}
	}
	salt := saltOf(t, s.salts)
	check := func(when, base string) {
		var mine, theirs release.Status
		(&client{base: base, http: site.httpClient(true)}).getJSON(t, "/v1/requests/"+s.request, &mine)
		if len(mine.Salts) != 1 || mine.Salts[0].Salt != salt {
			t.Errorf("%s: the submitting officer's status carries salts %+v", when, mine.Salts)
		}
		c := otherClient(base)
		c.getJSON(t, "/v1/requests/"+s.request, &theirs)
		if theirs.State != release.StateReleased || len(theirs.Salts) != 0 {
			t.Errorf("%s: another officer's status: %s with salts %+v", when, theirs.State, theirs.Salts)
		}
		if _, body := c.get(t, "/v1/requests/"+s.request+"?wait=1"); bytes.Contains(body, []byte(salt)) {
			t.Errorf("%s: another officer's waiting status carries the salt", when)
		}
	}
	check("before a restart", s.dm.client.base)
	s.dm.stop()
	dm := startDaemon(t, s.d, site.serveArgs()...)
	check("after a restart", dm.client.base)
}

// TestReleaseFetchesARequestAgain: custodian release --request fetches a
// request submitted before by its ID, without submitting: its package and
// salts again for the certificate that submitted it, no salts for
// another officer's, and a request of another warrant is refused.
func TestReleaseFetchesARequestAgain(t *testing.T) {
	s := newRevealSetup(t)
	dir := t.TempDir()
	again := func(p7s, name string, officer ...string) (int, string, string) {
		return cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", p7s, "--request", s.request,
			"--out", filepath.Join(dir, name)}, officer...)...)
	}
	code, stdout, stderr := again(s.p7s, "again.release.json", s.dm.officerArgs()...)
	m := keptRE.FindStringSubmatch(stdout)
	if code != 0 || m == nil || m[1] != s.index || strings.Contains(stdout, "press the button") {
		t.Fatalf("fetched again: exit %d\n%s%s", code, stdout, stderr)
	}
	if saltOf(t, m[2]) != saltOf(t, s.salts) {
		t.Error("the salt fetched again is not the one kept at release")
	}
	if data, err := os.ReadFile(filepath.Join(dir, "again.release.json")); err != nil {
		t.Error(err)
	} else if _, err := escrow.ParseRelease(data); err != nil {
		t.Errorf("the package fetched again: %v", err)
	}
	site := s.dm.site
	other := []string{"--ca", site.ServerCA, "--client-cert", site.OtherCert, "--client-key", site.OtherKey}
	if code, stdout, stderr := again(s.p7s, "other.release.json", other...); code != 0 || strings.Contains(stdout, "kept the salts") {
		t.Errorf("another officer fetching the request: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.release.salts.json")); err == nil {
		t.Error("another officer kept a salts file")
	}
	p7s := s.signed(t, "W-not-this-request", "court-a")
	if code, _, stderr := again(p7s, "wrong.release.json", s.dm.officerArgs()...); code == 0 || !strings.Contains(stderr, "is not for the warrant --warrant gives") {
		t.Errorf("another warrant's request: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", s.p7s, "--request", "XYZ", "--out", filepath.Join(dir, "x.json")}, s.dm.officerArgs()...)...); code == 0 || !strings.Contains(stderr, "is not a request ID") {
		t.Errorf("a malformed ID: exit %d\n%s", code, stderr)
	}
}
