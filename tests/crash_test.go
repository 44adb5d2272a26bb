package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// childStartLimit bounds a child daemon's start: one blocked before it
// serves (a planted FIFO it waits on) fails the test instead of hanging
// it. Far above any start on a loaded machine.
const childStartLimit = 60 * time.Second

// startChild runs the test binary as a daemon that kills itself at crashAt.
// servedEntries reads every entry of d's ledger through its running
// daemon's API (cl), each checked against the ledger's verifier key.
func servedEntries(t *testing.T, d *device, cl *client) []*ledger.Entry {
	t.Helper()
	var health struct {
		LedgerSize int64 `json:"ledger_size"`
	}
	cl.getJSON(t, "/v1/health", &health)
	verifier, err := os.ReadFile(filepath.Join(d.data, "ledger-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*ledger.Entry, health.LedgerSize)
	for i := range out {
		out[i] = cl.entryAt(t, int64(i), string(bytes.TrimSpace(verifier)))
	}
	return out
}

// kindsOf counts entries by kind.
func kindsOf(entries []*ledger.Entry) map[ledger.Kind]int {
	n := map[ledger.Kind]int{}
	for _, e := range entries {
		n[e.Kind]++
	}
	return n
}

// submitUntilKilled submits p7s (with its envelope list, or nil) to a
// daemon started to be killed at a stage, presses the button, and waits
// for the kill; it returns the submitted request's status.
func submitUntilKilled(t *testing.T, d *device, stage string, p7s, list []byte) release.Status {
	t.Helper()
	child, cl := startChild(t, d, stage)
	status, st, eb := cl.submitWithList(t, p7s, list)
	if status != http.StatusAccepted {
		t.Fatalf("%s: submit %d %+v", stage, status, eb)
	}
	// The daemon may die while the button is still down: no answer then.
	_ = button.Press(context.Background(), filepath.Join(d.data, button.SimSocket), 100*time.Millisecond)
	err := child.Wait()
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s: the daemon was not killed: %v", stage, err)
	}
	return st
}

func startChild(t *testing.T, d *device, crashAt string) (*exec.Cmd, *client) {
	t.Helper()
	s := newSite(t)
	cfg, _ := json.Marshal(childConfig{TPM: d.sw.Spec(), Data: d.data, CrashAt: crashAt,
		ServerCert: s.ServerCert, ServerKey: s.ServerKey, OfficerCA: s.OfficerCA})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	type read struct {
		line string
		err  error
	}
	first := make(chan read, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		first <- read{line, err}
	}()
	var got read
	select {
	case got = <-first:
	case <-time.After(childStartLimit):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child daemon said nothing within %v (blocked before serving)\n%s", childStartLimit, stderr)
	}
	m := servingRE.FindStringSubmatch(got.line)
	if got.err != nil || m == nil {
		cmd.Wait()
		t.Fatalf("child daemon: %q %v\n%s", got.line, got.err, stderr)
	}
	go io.Copy(io.Discard, stdout)
	return cmd, &client{base: m[1], http: s.httpClient(true)}
}

// TestKillNineBetweenLedgerEntryAndResponse kills the daemon with SIGKILL
// right after the release entry is durable, and again right after the
// package is stored but before any response. After each restart the
// release is retrievable (the same bytes, each time) or logged as failed,
// and the warrant is never released twice.
func TestKillNineBetweenLedgerEntryAndResponse(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")

	var running *exec.Cmd // the restarted daemon; swtpm serves one client
	stopRunning := func() {
		if running != nil {
			running.Process.Kill()
			running.Wait()
			running = nil
		}
	}
	crash := func(stage, serial string) (release.Status, *client, []byte) {
		stopRunning()
		p7s := c.sign(t, serial, agency.Public(), []string{"court-a"}, []string{"2026-11"}, time.Now().UTC())
		st := submitUntilKilled(t, d, stage, p7s, nil)
		var cl *client
		running, cl = startChild(t, d, "")
		var after release.Status
		cl.getJSON(t, "/v1/requests/"+st.ID, &after)
		return after, cl, p7s
	}

	countKinds := func(cl *client) map[ledger.Kind]int { return kindsOf(servedEntries(t, d, cl)) }

	// Killed after the entry, before the share was sealed: logged as failed.
	st, cl, p7s := crash("entry", "W-kill-1")
	if st.State != release.StateFailed || st.Failed["2026-11"] != release.CodeInterrupted || len(st.Packages) != 0 {
		t.Fatalf("after a kill at the entry: %+v", st)
	}
	if code, _ := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-11"); code != http.StatusNotFound {
		t.Fatalf("a package appeared for a failed release: %d", code)
	}
	if status, _, eb := cl.submit(t, p7s); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("resubmitted after the kill: %d %+v", status, eb)
	}
	kinds := countKinds(cl)
	if kinds[ledger.KindRelease] != 1 || kinds[ledger.KindFailure] != 1 {
		t.Fatalf("ledger after the first kill: %v", kinds)
	}
	// Its record marked unfinished again offline is not logged twice.
	stopRunning()
	settleLedger(t, d)
	editNote(t, d.data, requestNote+st.ID, func(old []byte) []byte {
		var rec map[string]any
		if err := json.Unmarshal(old, &rec); err != nil || rec["first_entry"] == nil {
			t.Fatalf("the record does not name its first entry: %v %v", rec, err)
		}
		rec["done"] = false
		delete(rec, "failed")
		data, _ := json.Marshal(rec)
		return data
	})
	running, cl = startChild(t, d, "")
	if kinds := countKinds(cl); kinds[ledger.KindFailure] != 1 {
		t.Fatalf("a record flipped back to unfinished was logged again: %v", kinds)
	}

	// Killed after the package was stored, before the response: retrievable.
	st, cl, p7s = crash("stored", "W-kill-2")
	if st.State != release.StateReleased || len(st.Packages) != 1 {
		t.Fatalf("after a kill at the store: %+v", st)
	}
	c1, one := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	c2, two := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	if c1 != http.StatusOK || c2 != http.StatusOK || !bytes.Equal(one, two) {
		t.Fatalf("package fetches: %d %d equal=%v", c1, c2, bytes.Equal(one, two))
	}
	if _, _, eb := cl.submit(t, p7s); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("resubmitted after the kill: %+v", eb)
	}
	kinds = countKinds(cl)
	if kinds[ledger.KindRelease] != 2 || kinds[ledger.KindFailure] != 1 {
		t.Fatalf("ledger after the second kill: %v", kinds)
	}
}

// TestKillNineWhileTheTPMComputesAListsPartials kills the daemon after the
// first of two calls of the TPM for a 300-envelope list's partials (the
// key ID's one release entry durable, 256 partials computed). After the
// restart the release is logged as failed (interrupted), no package
// exists, the warrant is spent, and no partial was computed again: the
// ledger holds the one release entry and its failure, nothing more.
func TestKillNineWhileTheTPMComputesAListsPartials(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	pub := provisionScoped(t, d, "2026-12")
	agency, _ := recipient.Generate("")
	_, refs := sealEnvelopes(t, pub, "alice@example.org", 300)
	list, err := warrant.ListOf(refs)
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	list.WriteTo(&file)
	w := draftWarrant("W-kill-list", agency.Public(), []string{"court-a", "court-z"}, []string{"2026-12"}, now)
	w.Targets = []string{"alice@example.org"}
	digest := list.Digest()
	w.EnvelopeList = &digest
	p7s := c.signDocument(t, w, time.Now())

	st := submitUntilKilled(t, d, "partials", p7s, file.Bytes())
	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	var after release.Status
	cl.getJSON(t, "/v1/requests/"+st.ID, &after)
	if after.State != release.StateFailed || after.Failed["2026-12"] != release.CodeInterrupted || len(after.Packages) != 0 {
		t.Fatalf("after a kill among the partials: %+v", after)
	}
	if code, _ := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-12"); code != http.StatusNotFound {
		t.Fatalf("a package appeared for an interrupted release: %d", code)
	}
	if _, _, eb := cl.submitWithList(t, p7s, file.Bytes()); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("resubmitted after the kill: %+v", eb)
	}
	kinds := kindsOf(servedEntries(t, d, cl))
	if kinds[ledger.KindRelease] != 1 || kinds[ledger.KindFailure] != 1 {
		t.Fatalf("ledger after the kill: %v (want one release entry for 300 envelopes and its failure)", kinds)
	}
}

// provisionScoped provisions a scoped 2-of-2 key ID on d (whose daemon is
// not running).
func provisionScoped(t *testing.T, d *device, keyID string) *escrow.Public {
	t.Helper()
	var pub *escrow.Public
	onDevice(t, d, func(a *appliance.Appliance, conn transport.TPM) {
		pub = provisionLocal(t, a, conn, keyID, escrow.WithMode(escrow.ModeScoped))
	})
	return pub
}
