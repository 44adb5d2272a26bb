package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
)

// watched is an appliance (a rig on swtpm) as a monitor sees it: its API
// over TLS at one address that stays while the appliance behind it is
// stopped, restored from a copy and started again.
type watched struct {
	r     *rig
	srv   *httptest.Server
	ca    string
	api   atomic.Pointer[http.Handler]
	state string // the monitor's --state
}

func newWatched(t *testing.T) *watched { return newWatchedRig(t, newRig(t)) }

// newWatchedRig is newWatched for the rig r.
func newWatchedRig(t *testing.T, r *rig) *watched {
	t.Helper()
	w := &watched{r: r, state: t.TempDir()}
	s := newSite(t)
	w.ca = s.ServerCA
	tlsCfg, _ := s.serverTLS(t)
	w.serve()
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		(*w.api.Load()).ServeHTTP(rw, req)
	}))
	w.srv.TLS = tlsCfg
	w.srv.StartTLS()
	t.Cleanup(func() { w.srv.Close(); w.r.stop() })
	return w
}

// serve points the address at the appliance's current daemon.
func (w *watched) serve() {
	h := (&release.API{Daemon: w.r.daemon, Limit: release.NewLimiter(1e6, 1e6)}).Handler()
	w.api.Store(&h)
}

// restart stops the appliance, lets change edit its data directory, and
// starts it again.
func (w *watched) restart(t *testing.T, change func(data string)) {
	t.Helper()
	w.r.stop()
	change(w.r.d.data)
	w.r.open(t)
	w.r.start(t)
	w.serve()
}

// snapshot copies the appliance's data directory as it is now.
func (w *watched) snapshot(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "copy")
	w.restart(t, func(data string) { copyDir(t, data, dir) })
	return dir
}

// restore puts a copy back in place of the data directory: the appliance
// opens it blocked (rolled back), and still signs checkpoints of it.
func (w *watched) restore(t *testing.T, copy string) {
	t.Helper()
	w.restart(t, func(data string) {
		if err := os.RemoveAll(data); err != nil {
			t.Fatal(err)
		}
		copyDir(t, copy, data)
	})
	if w.r.a.Ledger.Blocked() == nil {
		t.Fatal("the restored copy is not blocked")
	}
}

// monitor runs custodian monitor --once against the appliance.
func (w *watched) monitor(t *testing.T, extra ...string) (int, string, string) {
	t.Helper()
	args := []string{"monitor", "--once", "--appliance", w.srv.URL, "--verifier-key", w.r.a.VerifierKey,
		"--state", w.state, "--ca", w.ca, "--retries", "0"}
	return cli(t, append(args, extra...)...)
}

// append adds a refusal for key ID keyID.
func (w *watched) append(t *testing.T, keyID string) {
	t.Helper()
	e := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: string(release.CodeNoPress), KeyID: keyID}
	if _, err := w.r.a.Ledger.Append(e, []byte("a warrant"), nil); err != nil {
		t.Fatal(err)
	}
}

// stateCheckpoint is the checkpoint the monitor's state file keeps.
func (w *watched) stateCheckpoint(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(w.state, "custodian_court-a.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Checkpoint string `json:"checkpoint"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st.Checkpoint
}

// TestMonitorFollowsAnAppliance: the monitor reads the whole ledger on its
// first poll, then reports exactly the entries added between polls, one a
// line and as JSON lines; its state (0600) survives a restart, so a
// later run reports only what is new since.
func TestMonitorFollowsAnAppliance(t *testing.T) {
	w := newWatched(t)
	growLedger(t, w.r, 300) // a full tile and a partial one
	entries := filepath.Join(t.TempDir(), "entries.jsonl")
	code, out, errOut := w.monitor(t, "--entries", entries)
	if code != 0 || !strings.Contains(out, "custodian/court-a: 300 entries, 300 new, consistent with every checkpoint seen before") {
		t.Fatalf("first poll: exit %d\n%s%s", code, out, errOut)
	}
	info, err := os.Stat(filepath.Join(w.state, "custodian_court-a.json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("the state file: %v %v", info, err)
	}

	w.append(t, "2027-01")
	w.append(t, "2027-02")
	code, out, errOut = w.monitor(t, "--entries", entries)
	if code != 0 || !strings.Contains(out, "302 entries, 2 new") {
		t.Fatalf("second poll: exit %d\n%s%s", code, out, errOut)
	}
	var reported []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "custodian/court-a ") {
			reported = append(reported, line)
		}
	}
	if len(reported) != 2 || !strings.Contains(reported[0], "300  ") || !strings.Contains(reported[0], "refusal") ||
		!strings.Contains(reported[0], "key-id 2027-01") || !strings.Contains(reported[1], "301  ") || !strings.Contains(reported[1], "key-id 2027-02") {
		t.Fatalf("the new entries were reported as:\n%s", strings.Join(reported, "\n"))
	}

	// A third run, nothing new: the state was kept between processes.
	code, out, _ = w.monitor(t, "--entries", entries)
	if code != 0 || !strings.Contains(out, "302 entries, none new") {
		t.Fatalf("third poll: exit %d\n%s", code, out)
	}
	data, err := os.ReadFile(entries)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != 302 {
		t.Fatalf("%d JSON lines, want 302", len(lines))
	}
	for i, line := range lines {
		var e struct {
			Origin string `json:"origin"`
			Index  int64  `json:"index"`
			KeyID  string `json:"key_id"`
			Entry  string `json:"entry"`
		}
		if err := json.Unmarshal(line, &e); err != nil || e.Origin != "custodian/court-a" || e.Index != int64(i) {
			t.Fatalf("JSON line %d: %s (%v)", i, line, err)
		}
		if want, _ := w.r.a.Ledger.Entry(int64(i)); e.Entry != string(want) {
			t.Fatalf("JSON line %d is not the ledger's entry", i)
		}
	}
	if got, want := w.stateCheckpoint(t), mustCheckpoint(t, w.r); got != want {
		t.Fatalf("the state keeps %q, the appliance signs %q", got, want)
	}
}

func mustCheckpoint(t *testing.T, r *rig) string {
	t.Helper()
	cp, err := r.a.Ledger.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	return string(cp)
}

// evidenceOf checks that the report names two evidence files and that
// they are two checkpoints the appliance's key signed, of different trees.
func evidenceOf(t *testing.T, w *watched, errOut string) {
	t.Helper()
	var files []string
	for _, line := range strings.Split(errOut, "\n") {
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "evidence: "); ok {
			files = append(files, f)
		}
	}
	if len(files) != 2 {
		t.Fatalf("evidence files in the report: %q", errOut)
	}
	v, err := note.NewVerifier(w.r.a.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, f := range files {
		if filepath.Dir(f) != w.state {
			t.Fatalf("evidence %s outside the state directory", f)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open(data, note.VerifierList(v))
		if err != nil {
			t.Fatalf("evidence %s does not verify with the appliance's key: %v", f, err)
		}
		texts = append(texts, n.Text)
	}
	if texts[0] == texts[1] {
		t.Fatal("the two checkpoints kept as evidence are the same")
	}
}

// TestMonitorReportsARollbackAsStale: an appliance whose data directory
// is restored from an older copy serves a smaller signed tree. That alone
// proves nothing (an old checkpoint can be replayed by anyone), so the
// monitor exits 8, keeps no "evidence", does not latch it, and does not
// move its state back: the next run looks again.
func TestMonitorReportsARollbackAsStale(t *testing.T) {
	w := newWatched(t)
	growLedger(t, w.r, 5)
	old := w.snapshot(t)
	growLedger(t, w.r, 9)
	if code, out, errOut := w.monitor(t); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	seen := w.stateCheckpoint(t)
	w.restore(t, old)
	code, _, errOut := w.monitor(t)
	if code != 8 || !strings.Contains(errOut, "stale or rolled back: ") || !strings.Contains(errOut, "tree of 5 entries, smaller than the one of 9") ||
		strings.Contains(errOut, "evidence:") {
		t.Fatalf("a rolled-back appliance: exit %d\n%s", code, errOut)
	}
	if w.stateCheckpoint(t) != seen {
		t.Fatal("the state moved back with the appliance")
	}
	if code, _, errOut := w.monitor(t); code != 8 || !strings.Contains(errOut, "stale or rolled back") {
		t.Fatalf("the next run: exit %d\n%s", code, errOut)
	}
}

// TestMonitorDetectsSplitView: a copy of the data directory restored and
// resolved by its operator goes on as another history of the same log.
// The monitor exits 7 whether the other history is as long as the one it
// saw (same size, another root) or longer (no consistency proof), and
// keeps both signed checkpoints.
func TestMonitorDetectsSplitView(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	for _, c := range []struct {
		name  string
		extra int64 // entries the other history has beyond the seen one's size
		want  string
	}{
		{"same size", 0, "two signed trees of 10 entries with different root hashes"},
		{"longer", 3, "the signed tree of 13 entries does not extend the signed tree of 10 seen before"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWatched(t)
			growLedger(t, w.r, 6)
			fork := w.snapshot(t)
			growLedger(t, w.r, 10)
			if code, out, errOut := w.monitor(t); code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out, errOut)
			}
			w.restore(t, fork)
			if _, err := w.r.a.Ledger.ResolveRollback(time.Now()); err != nil {
				t.Fatal(err)
			}
			growLedger(t, w.r, 10+c.extra)
			code, _, errOut := w.monitor(t)
			if code != 7 || !strings.Contains(errOut, "split view: "+c.want) {
				t.Fatalf("another history: exit %d\n%s", code, errOut)
			}
			evidenceOf(t, w, errOut)
		})
	}
}

// TestMonitorDetectsBadSignature: a checkpoint signed by another key, or
// one altered on the way, is refused with exit 5 and moves no state; a
// server that does not answer is exit 3, not an alarm about the log.
func TestMonitorDetectsBadSignature(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	w := newWatched(t)
	growLedger(t, w.r, 3)
	if code, out, errOut := w.monitor(t); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	seen := w.stateCheckpoint(t)
	growLedger(t, w.r, 4)
	honest := *w.api.Load()
	altered := http.Handler(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		rec := httptest.NewRecorder()
		honest.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if req.URL.Path == release.TlogPrefix+"checkpoint" {
			body = bytes.Replace(body, []byte("\n4\n"), []byte("\n5\n"), 1)
		}
		rw.WriteHeader(rec.Code)
		rw.Write(body)
	}))
	w.api.Store(&altered)
	code, _, errOut := w.monitor(t)
	if code != 5 || !strings.Contains(errOut, "bad signature: the checkpoint "+w.srv.URL+" serves does not verify with the pinned key") {
		t.Fatalf("an altered checkpoint: exit %d\n%s", code, errOut)
	}
	w.api.Store(&honest)
	other := newWatched(t) // another appliance, its own key
	code, _, errOut = cli(t, "monitor", "--once", "--appliance", other.srv.URL, "--verifier-key", w.r.a.VerifierKey,
		"--state", w.state, "--ca", other.ca, "--retries", "0")
	if code != 5 || !strings.Contains(errOut, "bad signature") {
		t.Fatalf("another appliance's checkpoint: exit %d\n%s", code, errOut)
	}
	if w.stateCheckpoint(t) != seen {
		t.Fatal("a refused checkpoint moved the state")
	}
	w.srv.Close()
	if code, _, errOut := w.monitor(t); code != 3 || !strings.Contains(errOut, "unreachable") {
		t.Fatalf("a server that does not answer: exit %d\n%s", code, errOut)
	}
}

// TestMonitorServiceWarnsOnRollbackAndStopsOnSplitView: run as a service
// (no --once), the monitor reports entries as they come, poll after poll;
// when the appliance is rolled back it warns and goes on polling, and when
// the rolled-back copy is resolved and grows into another history it
// exits 7 with its report.
func TestMonitorServiceWarnsOnRollbackAndStopsOnSplitView(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	w := newWatched(t)
	growLedger(t, w.r, 4)
	old := w.snapshot(t)
	var out, errOut syncBuffer
	cmd := exec.Command(binary, "monitor", "--interval", "1s", "--appliance", w.srv.URL, "--verifier-key", w.r.a.VerifierKey,
		"--state", w.state, "--ca", w.ca)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	}()
	waitFor(t, "the first poll", 30*time.Second, func() bool { return strings.Contains(out.String(), "4 entries, 4 new") })
	w.append(t, "2027-03")
	waitFor(t, "the new entry", 30*time.Second, func() bool {
		return strings.Contains(out.String(), "5 entries, 1 new") && strings.Contains(out.String(), "key-id 2027-03")
	})
	w.restore(t, old)
	waitFor(t, "the warning of a smaller tree", 30*time.Second, func() bool {
		return strings.Contains(errOut.String(), "warning: ") && strings.Contains(errOut.String(), "stale or rolled back")
	})
	if _, err := w.r.a.Ledger.ResolveRollback(time.Now()); err != nil {
		t.Fatal(err)
	}
	growLedger(t, w.r, 7)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 || !strings.Contains(errOut.String(), "split view: ") {
			t.Fatalf("after another history: %v\n%s", err, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the monitor did not stop on a split view\n%s%s", out.String(), errOut.String())
	}
}

// TestMonitorStateSurvivesRestart: a monitor service killed outright
// (kill -9) after a poll keeps what it verified: the next run, from the
// same --state, reports only what came since and still proves the new
// checkpoint consistent with the one the killed process kept.
func TestMonitorStateSurvivesRestart(t *testing.T) {
	w := newWatched(t)
	growLedger(t, w.r, 7)
	var out syncBuffer
	cmd := exec.Command(binary, "monitor", "--interval", "1s", "--appliance", w.srv.URL, "--verifier-key", w.r.a.VerifierKey,
		"--state", w.state, "--ca", w.ca)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first poll", 30*time.Second, func() bool { return strings.Contains(out.String(), "7 entries, 7 new") })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if w.stateCheckpoint(t) == "" {
		t.Fatal("the killed monitor kept no checkpoint")
	}
	growLedger(t, w.r, 9)
	code, stdout, errOut := w.monitor(t)
	if code != 0 || !strings.Contains(stdout, "9 entries, 2 new, consistent with every checkpoint seen before") || strings.Contains(stdout, "     6  ") {
		t.Fatalf("after a restart: exit %d\n%s%s", code, stdout, errOut)
	}
}
