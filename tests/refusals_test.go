package tests

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// rig is one appliance with its daemon in this process, on swtpm, behind a
// real HTTP server, with a gpiotest button and a clock the test can move.
type rig struct {
	d      *device
	sw     *tpmtest.Swtpm
	rec    *tpmtest.Recorder
	tpm    *release.SerialTPM
	a      *appliance.Appliance
	daemon *release.Daemon
	srv    *httptest.Server
	site   *site // the server's TLS CA and the officer's certificate
	c      *client
	pin    *gpiotest.Pin
	court  *court
	agency *recipient.Identity
	skew   atomic.Int64 // added to the daemon's clock
	hook   atomic.Pointer[func(stage, keyID string)]
	// nowHook, when set, runs at each reading of the daemon's clock.
	nowHook atomic.Pointer[func()]
	// tally is the daemon's TallyInterval; 0: far longer than any test,
	// so counted refusals are written only when the daemon stops.
	tally  time.Duration
	escrow *escrow.Public // 2026-11's escrow file
	// witnessTimeout is the daemon's WitnessTimeout (0: the default).
	witnessTimeout time.Duration
}

func newRig(t testing.TB) *rig { return newRigAs(t, "court-a") }

// newRigAs is newRig for the custodian id.
func newRigAs(t testing.TB, id string) *rig { return newRigWith(t, id, nil) }

// newRigWith is newRigAs with the options escrowOpts gives, once the
// ledger's verifier key is known, for the ceremony of 2026-11.
func newRigWith(t testing.TB, id string, escrowOpts func(r *rig) []escrow.Option) *rig {
	t.Helper()
	r := newIdleRig(t, id)
	var opts []escrow.Option
	if escrowOpts != nil {
		opts = escrowOpts(r)
	}
	r.escrow = provisionLocal(t, r.a, r.tpm, "2026-11", opts...)
	r.start(t)
	return r
}

// newIdleRig is newRigAs with no key ID provisioned and no daemon started.
func newIdleRig(t testing.TB, id string) *rig { return newIdleRigVia(t, id, nil) }

// newIdleRigVia is newIdleRig with the TPM's transport passed through
// via (nil: as it is), to fail chosen commands.
func newIdleRigVia(t testing.TB, id string, via func(transport.TPM) transport.TPM) *rig {
	t.Helper()
	now := time.Now().UTC()
	d, _, _ := enroll(t, id, t.TempDir())
	r := &rig{d: d, sw: d.sw, court: newCourt(t, now)}
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var through transport.TPM = conn
	if via != nil {
		through = via(conn)
	}
	r.rec = &tpmtest.Recorder{TPM: through}
	r.tpm = release.Serialize(r.rec)
	r.open(t)
	r.agency, err = recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	r.pin = &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level, 16)}
	return r
}

func (r *rig) open(t testing.TB) {
	t.Helper()
	a, err := appliance.Open(r.d.data, r.tpm)
	if err != nil {
		t.Fatal(err)
	}
	r.a = a
}

func (r *rig) now() time.Time {
	if h := r.nowHook.Load(); h != nil {
		(*h)()
	}
	return time.Now().Add(time.Duration(r.skew.Load()))
}

func (r *rig) start(t testing.TB) {
	t.Helper()
	btn, err := button.NewGPIO(r.pin)
	if err != nil {
		t.Fatal(err)
	}
	tally := r.tally
	if tally == 0 {
		tally = 1000 * time.Hour
	}
	r.daemon, err = release.New(release.Config{Appliance: r.a, TPM: r.tpm, Button: btn, Window: 1500 * time.Millisecond,
		Now: r.now, TallyInterval: tally, WitnessTimeout: r.witnessTimeout, Hook: func(stage, keyID string) {
			if h := r.hook.Load(); h != nil {
				(*h)(stage, keyID)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	// A generous limit: these tests are about refusals, not rate limits.
	// Over TLS with a court officer's certificate, as serve runs.
	s := newSite(t)
	r.site = s
	tlsCfg, officers := s.serverTLS(t)
	r.srv = httptest.NewUnstartedServer((&release.API{Daemon: r.daemon, Limit: release.NewLimiter(1000, 1000), Global: release.NewLimiter(1000, 1000), Officers: officers}).Handler())
	r.srv.TLS = tlsCfg
	r.srv.StartTLS()
	r.c = &client{base: r.srv.URL, http: s.httpClient(true)}
}

func (r *rig) stop() {
	r.srv.Close()
	r.daemon.Close()
	r.a.Close()
}

func (r *rig) warrant(t testing.TB, serial string, custodians ...string) []byte {
	t.Helper()
	if len(custodians) == 0 {
		custodians = []string{"court-a", "court-z"}
	}
	return r.court.sign(t, serial, r.agency.Public(), custodians, []string{"2026-11"}, time.Now().UTC())
}

// press presses the gpiotest button firmly and lets it go.
func (r *rig) press() {
	r.pin.EdgesChan <- gpio.Low
	time.Sleep(60 * time.Millisecond)
	r.pin.EdgesChan <- gpio.High
}

// blockingCodes are refusals of a blocked ledger: they go to the daemon's
// log only, neither logged in the ledger nor counted.
var blockingCodes = map[release.Code]bool{
	release.CodeLedgerBlocked: true, release.CodeStateMismatch: true, release.CodeStateInterrupt: true, release.CodeForeignLedgerKey: true,
}

// expectRefusal submits p7s (or waits on an accepted request) and checks
// the code, the HTTP status, and the ledger refusal entry — or, when not
// logged, that no entry was written and the refusal was counted.
func (r *rig) expectRefusal(t testing.TB, p7s []byte, code release.Code, logged bool) {
	t.Helper()
	r.expectRefusalWithList(t, p7s, nil, code, logged)
}

// expectRefusalWithList is expectRefusal for a warrant submitted with the
// envelope list file list (nil: alone).
func (r *rig) expectRefusalWithList(t testing.TB, p7s, list []byte, code release.Code, logged bool) {
	t.Helper()
	size := r.a.Ledger.Size()
	counted := r.daemon.Counted()[string(code)]
	status, st, eb := r.c.submitWithList(t, p7s, list)
	var index *int64
	if status == http.StatusAccepted {
		st = r.c.wait(t, st.ID)
		if st.State != release.StateRefused || st.Code != code {
			t.Fatalf("want refusal %s, got %+v", code, st)
		}
		i := st.LedgerIndices[""]
		index = &i
	} else {
		if eb.Error.Code != code || status != release.HTTPStatus(code) {
			t.Fatalf("want %s (%d), got %d %+v", code, release.HTTPStatus(code), status, eb)
		}
		index = eb.Error.LedgerIndex
	}
	if !logged {
		if index != nil || r.a.Ledger.Size() != size {
			t.Fatalf("%s: unexpected ledger entry", code)
		}
		if !blockingCodes[code] && r.daemon.Counted()[string(code)] != counted+1 {
			t.Fatalf("%s: not counted", code)
		}
		return
	}
	if index == nil {
		t.Fatalf("%s: no ledger entry", code)
	}
	e := r.c.entryAt(t, *index, r.a.VerifierKey)
	if e.Kind != ledger.KindRefusal || e.Reason != string(code) || len(e.Commitment) == 0 {
		t.Fatalf("%s: logged as %+v", code, e)
	}
	// The refusal entry commits to the submitted bytes.
	salt, err := r.a.Ledger.Salt(*index)
	if err != nil || !bytes.Equal(ledger.Commit(salt, p7s), e.Commitment) {
		t.Fatalf("%s: the entry does not commit to the submitted warrant", code)
	}
	if r.a.Ledger.Size() != size+1 {
		t.Fatalf("%s: %d entries for one refusal", code, r.a.Ledger.Size()-size)
	}
}

// releaseOK submits, presses and returns the package.
func (r *rig) releaseOK(t testing.TB, p7s []byte) (*release.Status, *escrow.Release) {
	t.Helper()
	return r.releaseOKAfter(t, p7s, func() {})
}

// releaseOKAfter is releaseOK with meanwhile run while the device waits
// for the press.
func (r *rig) releaseOKAfter(t testing.TB, p7s []byte, meanwhile func()) (*release.Status, *escrow.Release) {
	t.Helper()
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	if st.State != release.StateAwaitingPress || st.Summary == "" {
		t.Fatalf("submit: %+v", st)
	}
	meanwhile()
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateReleased || len(st.Packages) != 1 {
		t.Fatalf("release: %+v", st)
	}
	code, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	if code != http.StatusOK {
		t.Fatalf("package: %d %s", code, data)
	}
	pkg, err := escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	return &st, pkg
}

// TestInvariantShareLeavesOnlyAfterDurableLedgerEntry: when the release
// entry is durable the TPM has not unsealed the share and no package
// exists yet; the package that leaves is
// HPKE-sealed to the warrant's recipient, its proof names that entry, and
// the share never crossed the TPM bus in clear.
func TestInvariantShareLeavesOnlyAfterDurableLedgerEntry(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	p7s := r.warrant(t, "W-1")

	var atEntry struct {
		size      int64
		unseals   int
		pkgExists bool
	}
	hook := func(stage, keyID string) {
		if stage != "entry" {
			return
		}
		atEntry.size = r.a.Ledger.Size()
		atEntry.unseals, _ = r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1)
		atEntry.pkgExists = len(storedPackages(t, r.a)) > 0
	}
	r.hook.Store(&hook)
	r.rec.Reset()
	st, pkg := r.releaseOK(t, p7s)
	// Not a file on disk but the TPM's own Unseal: a share opened (and
	// sealed to the recipient) before its entry would be in memory,
	// ready to leave, while a crash could still lose the entry.
	if atEntry.size == 0 || atEntry.unseals != 0 || atEntry.pkgExists {
		t.Fatalf("at the durable entry: %+v (the share may not be unsealed yet)", atEntry)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 1 {
		t.Fatalf("the release unsealed %d times, want once after the entry", n)
	}
	e, err := pkg.Ledger.Check(r.a.VerifierKey)
	if err != nil || e.Kind != ledger.KindRelease || e.KeyID != "2026-11" || pkg.Ledger.Index != st.LedgerIndices["2026-11"] {
		t.Fatalf("proof: %v %+v", err, e)
	}
	if salt, err := r.a.Ledger.Salt(pkg.Ledger.Index); err != nil || !bytes.Equal(ledger.Commit(salt, p7s), e.Commitment) {
		t.Fatal("the release entry does not commit to the submitted warrant")
	}
	if pkg.Ledger.Index >= atEntry.size {
		t.Fatalf("the package's entry %d was not in the ledger (size %d) before the share was opened", pkg.Ledger.Index, atEntry.size)
	}
	digest, _ := hex.DecodeString(st.WarrantDigest)
	share, err := r.agency.Open(escrow.ShareInfo(digest, "court-a", "2026-11", pkg.Index), pkg.SealedShare)
	if err != nil {
		t.Fatalf("the agency cannot open its share: %v", err)
	}
	if r.rec.Seen(share) {
		t.Fatal("the share crossed the TPM bus in clear")
	}
	if st.Timings == nil || st.Timings.TPMCommands == 0 {
		t.Fatalf("timings: %+v", st.Timings)
	}
	t.Logf("press→package: ledger %.1f ms, TPM %.1f ms, HPKE %.2f ms, proof %.1f ms, store %.1f ms, total %.1f ms; verify %.1f ms; %d TPM commands",
		st.Timings.LedgerMS, st.Timings.TPMMS, st.Timings.HPKEMS, st.Timings.ProofMS, st.Timings.StoreMS, st.Timings.TotalMS, st.Timings.VerifyMS, st.Timings.TPMCommands)

	// Fetching again returns the same bytes: one sealing per entry.
	_, a1 := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	_, a2 := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	if !bytes.Equal(a1, a2) {
		t.Fatal("two fetches gave two packages")
	}

	// A warrant naming two key IDs releases each, each with its own entry.
	provisionLocal(t, r.a, r.tpm, "2026-12")
	p7s = r.court.sign(t, "W-two", r.agency.Public(), []string{"court-a"}, []string{"2026-11", "2026-12"}, time.Now().UTC())
	status, two, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("two key IDs: %d %+v", status, eb)
	}
	r.press()
	if two = r.c.wait(t, two.ID); two.State != release.StateReleased || len(two.Packages) != 2 {
		t.Fatalf("two key IDs: %+v", two)
	}
	for _, k := range []string{"2026-11", "2026-12"} {
		_, data := r.c.get(t, "/v1/requests/"+two.ID+"/packages/"+k)
		pkg, err := escrow.ParseRelease(data)
		if err != nil {
			t.Fatal(err)
		}
		e, err := pkg.Ledger.Check(r.a.VerifierKey)
		if err != nil || e.Kind != ledger.KindRelease || e.KeyID != k || pkg.KeyID != k {
			t.Fatalf("%s: %v %+v", k, err, e)
		}
	}
	if two.LedgerIndices["2026-11"] == two.LedgerIndices["2026-12"] {
		t.Fatal("one entry for two key IDs")
	}
	if _, _, eb := r.c.submit(t, p7s); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("the two-key warrant again: %+v", eb)
	}

	// The API's edges answer with codes, never a crash.
	for path, want := range map[string]int{
		"/v1/requests/" + strings.Repeat("0", 32):                  http.StatusNotFound,
		"/v1/requests/../../etc/passwd":                            http.StatusNotFound,
		"/v1/requests/" + two.ID + "/packages/..%2f..%2fledger.db": http.StatusNotFound,
		"/v1/requests/" + two.ID + "/packages/2027-01":             http.StatusNotFound,
		"/v1/requests/" + two.ID + "?wait=9999":                    http.StatusBadRequest,
		"/v1/entries/99999":                                        http.StatusNotFound,
		"/v1/entries/-1":                                           http.StatusNotFound,
		"/v1/consistency?old=5&size=2":                             http.StatusBadRequest,
		"/v1/consistency?old=1&size=2":                             http.StatusOK,
		"/v1/checkpoint":                                           http.StatusOK,
		"/v1/health":                                               http.StatusOK,
	} {
		if code, body := r.c.get(t, path); code != want {
			t.Errorf("GET %s: %d %s, want %d", path, code, body, want)
		}
	}
	resp, err := r.c.http.Post(r.c.base+"/v1/attest", "application/json", strings.NewReader(`{"nonce":"00112233445566778899"}`))
	if err != nil || resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("attest: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
}

// TestInvariantEveryRefusalHasItsCodeAndLedgerEntry: each refusal has its
// specific code, releases nothing, and is logged: a warrant whose
// signatures verified gets its own ledger refusal entry (committing to the
// submitted bytes); anything else is counted for the next unverified entry.
func TestInvariantEveryRefusalHasItsCodeAndLedgerEntry(t *testing.T) {
	r := newRig(t)
	now := time.Now().UTC()
	bob := trusttest.ECKeyP256(t)
	bobCert := r.court.root.Judge(t, "Judge Bob", bob.Public(), now)
	r.court.install(t, r.a, now, bobCert)

	// Snapshot the data directory for the rollback case at the end.
	r.a.Close()
	snapshot := filepath.Join(t.TempDir(), "snapshot")
	copyDir(t, r.d.data, snapshot)
	r.open(t)
	r.daemon.Close()
	r.srv.Close()
	r.start(t)

	releases := func() int {
		n := 0
		for i := int64(0); i < r.a.Ledger.Size(); i++ {
			data, _ := r.a.Ledger.Entry(i)
			if e, _ := ledger.ParseEntry(data); e != nil && e.Kind == ledger.KindRelease {
				n++
			}
		}
		return n
	}

	t.Run("malformed input", func(t *testing.T) {
		r.expectRefusal(t, []byte("not a warrant"), "malformed_cms", false)
		r.expectRefusal(t, nil, "malformed_cms", false)
		big := bytes.Repeat([]byte{0x30}, release.MaxBody+1)
		r.expectRefusal(t, big, release.CodeTooLarge, false)
	})
	t.Run("no press within the window", func(t *testing.T) {
		r.expectRefusal(t, r.warrant(t, "W-nopress"), release.CodeNoPress, true)
	})
	t.Run("busy while another awaits approval", func(t *testing.T) {
		status, first, _ := r.c.submit(t, r.warrant(t, "W-first"))
		if status != http.StatusAccepted {
			t.Fatalf("first: %d", status)
		}
		r.expectRefusal(t, r.warrant(t, "W-second"), release.CodeBusy, false)
		if st := r.c.wait(t, first.ID); st.Code != release.CodeNoPress {
			t.Fatalf("first: %+v", st)
		}
	})
	t.Run("held button (pressed before the summary)", func(t *testing.T) {
		r.pin.Out(gpio.Low) // held down since before the summary: no edge after it
		r.expectRefusal(t, r.warrant(t, "W-held"), release.CodeButtonHeld, true)
		r.pin.Out(gpio.High)
	})
	t.Run("replayed", func(t *testing.T) {
		p7s := r.warrant(t, "W-once")
		r.releaseOK(t, p7s)
		r.expectRefusal(t, p7s, release.CodeReplayed, true)
		// A new document with the same (court, serial) is not new either.
		w := draftWarrant("W-once", r.agency.Public(), []string{"court-a", "court-z"}, []string{"2026-11"}, time.Now().UTC())
		w.Docket = "CR-2/2026"
		r.expectRefusal(t, r.court.signDocument(t, w, time.Now()), release.CodeReplayed, true)
	})
	t.Run("signed before the replay floor", func(t *testing.T) {
		// The ledger was created minutes ago: a warrant signed an hour ago
		// may have been used in a lost stretch of ledger.
		now := time.Now().UTC()
		p7s := r.court.signAt(t, "W-old", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, now, now.Add(-time.Hour))
		r.expectRefusal(t, p7s, release.CodeBeforeFloor, true)
	})
	t.Run("another custodian", func(t *testing.T) {
		r.expectRefusal(t, r.warrant(t, "W-other", "court-q"), "not_addressed", true)
	})
	t.Run("revoked judge", func(t *testing.T) {
		w := &court{root: r.court.root, key: bob, judge: bobCert}
		// A revoked key may be a stolen one: nobody accountable stands
		// behind it, so the refusal is counted.
		r.expectRefusal(t, w.sign(t, "W-bob", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, time.Now().UTC()), "revoked", false)
	})
	t.Run("PCR state changed", func(t *testing.T) {
		r.sw.PowerCycle(t, r.tpm)
		measure(t, r.tpm, "a different image")
		r.expectRefusal(t, r.warrant(t, "W-pcr"), release.CodePCRMismatch, true)
	})
	t.Run("stale CRL", func(t *testing.T) {
		r.skew.Store(int64(36 * time.Hour)) // the CRL's next update was 24 h ahead
		// Without a fresh CRL no signer verifies: counted.
		r.expectRefusal(t, r.warrant(t, "W-stale"), "crl_stale", false)
	})
	t.Run("clock before the last entry", func(t *testing.T) {
		// An entry two hours ahead, then the clock back to now.
		r.skew.Store(int64(2 * time.Hour))
		r.expectRefusal(t, r.warrant(t, "W-ahead", "court-q"), "not_addressed", true)
		r.skew.Store(0)
		r.expectRefusal(t, r.warrant(t, "W-clock"), release.CodeClockBehind, true)
	})
	if n := releases(); n != 1 {
		t.Fatalf("%d release entries, want the one approved release", n)
	}
	t.Run("data directory rolled back", func(t *testing.T) {
		r.stop()
		os.RemoveAll(r.d.data)
		copyDir(t, snapshot, r.d.data)
		// Back on the approved image, which alone can check the directory.
		r.sw.PowerCycle(t, r.tpm)
		measure(t, r.tpm, "approved")
		r.open(t)
		r.start(t)
		defer r.stop()
		if r.a.Ledger.Blocked() == nil {
			t.Fatal("the rolled-back ledger is not blocked")
		}
		// The ledger refuses every append, so this refusal is not logged there.
		r.expectRefusal(t, r.warrant(t, "W-rollback"), release.CodeLedgerBlocked, false)
	})
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestInvariantStartupStateIsBoundToTPMDaemonRefusesWithItsCode: a daemon
// started on a data directory whose trust store was restored alone (an
// older CRL, still in force, that does not revoke Bob), whose provisioned
// bundle was removed, or that a power cut left between a CRL's write and
// its entry, refuses every warrant with the state's own code, logs
// nothing, and reports it in its health; the operator's resolve and a
// fresh CRL bring it back.
func TestInvariantStartupStateIsBoundToTPMDaemonRefusesWithItsCode(t *testing.T) {
	r := newRig(t)
	now := time.Now().UTC()
	r.court.install(t, r.a, now)
	trustDir := filepath.Join(r.d.data, appliance.TrustDir)
	older := filepath.Join(t.TempDir(), "trust")
	copyDir(t, trustDir, older)
	bob := r.court.root.Judge(t, "Judge Bob", trusttest.ECKeyP256(t).Public(), now)
	r.court.install(t, r.a, now, bob)
	// The disk as a power cut leaves it between a CRL's write and its entry.
	interrupted := filepath.Join(t.TempDir(), "interrupted")
	store, err := trust.Open(trustDir)
	if err != nil {
		t.Fatal(err)
	}
	crl := trusttest.CRLPEM(r.court.root.CRL(t, now, now.Add(24*time.Hour), bob))
	err = r.a.ChangeTrust(crl, time.Now(), func() error {
		_, err := store.SetCRL(crl, now)
		copyDir(t, r.d.data, interrupted)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.stop()

	for _, c := range []struct {
		name   string
		tamper func()
		code   release.Code
	}{
		{"trust store restored", func() { os.RemoveAll(trustDir); copyDir(t, older, trustDir) }, release.CodeStateMismatch},
		{"bundle removed", func() { os.Remove(filepath.Join(r.d.data, appliance.BundleDir, "2026-11.json")) }, release.CodeStateMismatch},
		{"trust change interrupted", func() { os.RemoveAll(r.d.data); copyDir(t, interrupted, r.d.data) }, release.CodeStateInterrupt},
	} {
		name := c.name
		t.Run(name, func(t *testing.T) {
			c.tamper()
			r.open(t)
			r.start(t)
			defer r.stop()
			var health struct {
				OK      bool   `json:"ok"`
				Blocked string `json:"blocked"`
			}
			code, body := r.c.get(t, "/v1/health")
			if err := json.Unmarshal(body, &health); err != nil || code != http.StatusOK || health.OK || !strings.Contains(health.Blocked, "data directory") {
				t.Fatalf("health: %d %s", code, body)
			}
			r.expectRefusal(t, r.warrant(t, "W-state-"+name[:5]), c.code, false)
			// The operator: accept what is there (logged), then set the
			// current CRL again, unless the interrupted change was that.
			if _, err := r.a.Ledger.ResolveRollback(time.Now()); err != nil {
				t.Fatal(err)
			}
			if c.code == release.CodeStateMismatch {
				r.court.install(t, r.a, time.Now().UTC(), bob)
			}
			if err := r.a.Ledger.Blocked(); err != nil {
				t.Fatalf("still blocked after the operator: %v", err)
			}
		})
	}
}
