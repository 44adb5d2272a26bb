package tests

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/torchwood"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/witness"
	"github.com/custodian-project/custodian/hsm/witness/witnesstest"
)

// TestInvariantServedCheckpointMeetsEveryEscrowFilesQuorum: an appliance
// holding two key IDs whose escrow files name different witnesses
// (2026-11: one,two quorum 2; 2026-12: three,four quorum 2) serves a
// checkpoint that `ledger verify --escrow` accepts for each file: the
// background loop asks each file's witnesses for its own quorum, not the
// first answers of a merged list.
func TestInvariantServedCheckpointMeetsEveryEscrowFilesQuorum(t *testing.T) {
	r, ws := witnessedRig(t, 2, 2, 10*time.Second)
	defer r.stop()
	w3 := witnesstest.Start(t, "witness.test/three", "custodian/court-a", r.a.VerifierKey)
	w4 := witnesstest.Start(t, "witness.test/four", "custodian/court-a", r.a.VerifierKey)
	other := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithWitnesses(refs([]*witnesstest.Witness{w3, w4}), 2))

	r.expectRefusal(t, r.warrant(t, "W-elsewhere", "court-q"), "not_addressed", true)
	every := witness.Policy{Witnesses: append(refs(ws), w3.Ref(), w4.Ref()), Quorum: 4}
	waitFor(t, "the refusal's checkpoint cosigned by all four", 20*time.Second, func() bool {
		_, served := r.c.get(t, release.TlogPrefix+"checkpoint")
		cp, _, err := witness.VerifyQuorum(served, every)
		return err == nil && int64(cp.Size) == r.a.Ledger.Size()
	})
	_, served := r.c.get(t, release.TlogPrefix+"checkpoint")
	t.Logf("served:\n%s", served)

	remote := []string{"ledger", "verify", "--server", r.c.base, "--verifier-key", filepath.Join(r.d.data, "ledger-key.pub"), "--ca", r.site.ServerCA}
	for _, pub := range []*escrow.Public{r.escrow, other} {
		data, _ := pub.Marshal()
		path := tempFile(t, "escrow-"+pub.KeyID+".pub.json", data)
		code, out, errOut := cli(t, append(remote, "--escrow", path)...)
		t.Logf("ledger verify --escrow %s: exit %d\n%s%s", pub.KeyID, code, out, errOut)
		if code != 0 {
			t.Errorf("honest appliance, all witnesses up: ledger verify --escrow %s refuses", pub.KeyID)
		}
	}
}

// holdProxy forwards add-checkpoint requests to a witness, holding those
// whose checkpoint has size hold until release is closed (a slow or
// reordering network between the appliance and a witness).
type holdProxy struct {
	target  string
	hold    atomic.Int64
	release chan struct{}
	held    atomic.Int64
}

func (p *holdProxy) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	_, note, _ := bytes.Cut(body, []byte("\n\n"))
	lines := strings.SplitN(string(note), "\n", 3)
	if len(lines) > 1 {
		if n, err := strconv.ParseInt(lines[1], 10, 64); err == nil && n == p.hold.Load() {
			p.held.Add(1)
			<-p.release
		}
	}
	resp, err := http.Post(p.target+req.URL.Path, "text/plain", bytes.NewReader(body))
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestInvariantOvertakenReleaseIsReleased: the release's checkpoint (size s) is delayed on its
// way to the witness; meanwhile a refusal entry is logged (s+1) and
// anyone (a monitor, the attacker) submits the appliance's newer,
// consistent checkpoint to the witness. The release is not refused as a
// restored copy: the appliance submits its newest checkpoint, which holds
// the release entry, and the package carries it.
func TestInvariantOvertakenReleaseIsReleased(t *testing.T) {
	var wit *witnesstest.Witness
	px := &holdProxy{release: make(chan struct{})}
	px.hold.Store(-1)
	var srv *httptest.Server
	r := newRigWith(t, "court-a", func(r *rig) []escrow.Option {
		r.witnessTimeout = 20 * time.Second
		wit = witnesstest.Start(t, "witness.test/one", "custodian/court-a", r.a.VerifierKey)
		px.target = wit.URL
		srv = httptest.NewServer(px)
		return []escrow.Option{escrow.WithWitnesses([]witness.Witness{{Key: wit.Key, URL: srv.URL}}, 1)}
	})
	r.court.install(t, r.a, time.Now().UTC())
	defer r.stop()
	defer srv.Close()
	defer func() {
		select {
		case <-px.release:
		default:
			close(px.release)
		}
	}()
	// the release entry will be at index Size(): its checkpoint has Size()+1
	px.hold.Store(r.a.Ledger.Size() + 1)
	status, st, eb := r.c.submit(t, r.warrant(t, "W-overtaken"))
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	waitFor(t, "the release's checkpoint held", 20*time.Second, func() bool { return px.held.Load() > 0 })
	// A logged refusal from another request, then anyone submits the
	// newer checkpoint directly to the witness.
	r.expectRefusal(t, r.warrant(t, "W-elsewhere", "court-q"), "not_addressed", true)
	signed, size, err := r.a.Ledger.CheckpointSize()
	if err != nil {
		t.Fatal(err)
	}
	anyone, _ := witness.NewCosigner(t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	direct := witness.Policy{Witnesses: []witness.Witness{wit.Ref()}, Quorum: 1}
	if _, _, err := anyone.Cosign(ctx, r.a.Ledger, signed, size, direct); err != nil {
		t.Fatalf("anyone's submission: %v", err)
	}
	close(px.release)
	st = r.c.wait(t, st.ID)
	t.Logf("release: state %s failed %v message %q", st.State, st.Failed, st.Message)
	if st.State != release.StateReleased {
		t.Fatalf("an honest release whose checkpoint was overtaken fails: %+v", st)
	}
	code, data := r.c.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	if code != http.StatusOK {
		t.Fatalf("package: %d %s", code, data)
	}
	pkg, err := escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := witness.VerifyQuorum([]byte(pkg.Ledger.Checkpoint), witness.Policy{Witnesses: []witness.Witness{wit.Ref()}, Quorum: 1})
	if err != nil {
		t.Fatalf("the package's checkpoint: %v", err)
	}
	if e, err := pkg.Ledger.Check(r.a.VerifierKey); err != nil || int64(cp.Size) < size {
		t.Fatalf("the package's entry in the newer cosigned checkpoint (size %d, the refusal's %d): %v %+v", cp.Size, size, err, e)
	}
}

// TestQuorumZeroWitnessesAreSubmitted: witnesses named with
// --witness-quorum 0 ("0 to submit without waiting", the ceremony's hint)
// are submitted each checkpoint by the background loop.
func TestQuorumZeroWitnessesAreSubmitted(t *testing.T) {
	r, ws := witnessedRig(t, 1, 0, 5*time.Second)
	defer r.stop()
	r.expectRefusal(t, r.warrant(t, "W-elsewhere", "court-q"), "not_addressed", true)
	p := witness.Policy{Witnesses: refs(ws), Quorum: 1}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		_, served := r.c.get(t, release.TlogPrefix+"checkpoint")
		if _, _, err := witness.VerifyQuorum(served, p); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("quorum-0 witnesses were not submitted the refusal's checkpoint within 5s")
}

// TestInvariantBundleWitnessFieldsEditedOfflineReleaseNothing: someone
// holding the SD card between boots strips the witness fields from the
// stored bundle; the edit is caught at start (bundles are recorded), and
// no release leaves unwitnessed.
func TestInvariantBundleWitnessFieldsEditedOfflineReleaseNothing(t *testing.T) {
	r, ws := witnessedRig(t, 2, 2, 3*time.Second)
	r.stop()
	for _, w := range ws {
		w.Stop()
	}
	path := filepath.Join(r.d.data, "bundles", "2026-11.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	esc := m["escrow"].(map[string]any)
	delete(esc, "witnesses")
	delete(esc, "witness_quorum")
	out, _ := json.Marshal(m)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	r.open(t)
	r.start(t)
	defer r.stop()
	t.Logf("blocked after the edit: %v", r.a.Ledger.Blocked())
	status, st, eb := r.c.submit(t, r.warrant(t, "W-stripped"))
	t.Logf("submit: %d %+v %+v", status, st, eb)
	if status != http.StatusAccepted {
		return
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	t.Logf("release: %s %v", st.State, st.Failed)
	if st.State == release.StateReleased {
		t.Errorf("the share left without the witness quorum after an offline bundle edit")
	}
}

// TestInvariantMonitorDoesNotCallUnknownLogASplitView: a monitor with
// --escrow whose escrow file names a witness that does not (yet, or any
// more) know this log reports an unreachable witness (exit 3, not
// sticky), not a proven split view, on an honest appliance.
func TestInvariantMonitorDoesNotCallUnknownLogASplitView(t *testing.T) {
	r, ws := witnessedRig(t, 1, 1, 10*time.Second)
	w := newWatchedRig(t, r)
	r.releaseOK(t, r.warrant(t, "W-honest"))
	stranger := witnesstest.Start(t, "witness.test/stranger", "custodian/court-other", r.a.VerifierKey)
	pub := *r.escrow
	q := 2
	pub.Witnesses, pub.WitnessQuorum = append(refs(ws), stranger.Ref()), &q
	data, err := pub.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := tempFile(t, "escrow-2026-11.pub.json", data)
	code, out, errOut := w.monitor(t, "--escrow", path)
	t.Logf("monitor: exit %d\n%s%s", code, out, errOut)
	if code != 3 || strings.Contains(errOut, "split view") || !strings.Contains(errOut, "not proof of another history") {
		t.Fatalf("one witness that does not know the log: exit %d, want 3 with a clear message", code)
	}
	code, _, errOut = w.monitor(t, "--escrow", path)
	if code != 3 {
		t.Fatalf("the second poll: exit %d, want 3 again (nothing sticky)\n%s", code, errOut)
	}
	pub.Witnesses, pub.WitnessQuorum = refs(ws), &q
	q = 1
	data, _ = pub.Marshal()
	if code, _, errOut := w.monitor(t, "--escrow", tempFile(t, "escrow-ok.pub.json", data)); code != 0 {
		t.Fatalf("with the stranger left out: exit %d, want 0 (no alarm latched)\n%s", code, errOut)
	}
}

// TestInvariantLoneWitnessCannotProveASplitView: one witness that answers
// "another history" (HTTP 422) to every checkpoint, beside an honest
// witness, with the escrow file's quorum of 2, is its word against the
// other's: the monitor raises an alarm that does not stick (exit 3), not
// a proven split view (exit 7).
func TestInvariantLoneWitnessCannotProveASplitView(t *testing.T) {
	r, ws := witnessedRig(t, 1, 1, 10*time.Second)
	w := newWatchedRig(t, r)
	r.releaseOK(t, r.warrant(t, "W-honest"))
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnprocessableEntity)
	}))
	defer liar.Close()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := torchwood.NewCosignatureSigner("witness.test/liar", priv)
	if err != nil {
		t.Fatal(err)
	}
	pub := *r.escrow
	q := 2
	pub.Witnesses, pub.WitnessQuorum = append(refs(ws), witness.Witness{Key: s.Verifier().String(), URL: liar.URL}), &q
	data, err := pub.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := tempFile(t, "escrow-2026-11.pub.json", data)
	for range 2 {
		code, _, errOut := w.monitor(t, "--escrow", path)
		if code != 3 || strings.Contains(errOut, "split view") || !strings.Contains(errOut, "fewer than the quorum of 2") {
			t.Fatalf("one witness saying another history: exit %d, want 3, not sticky\n%s", code, errOut)
		}
	}
}
