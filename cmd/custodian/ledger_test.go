package main

import (
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// measureBoot extends the PCRs the ledger key is sealed to, through a
// connection of its own (swtpm serves one client at a time).
func measureBoot(t *testing.T, sw *tpmtest.Swtpm) {
	t.Helper()
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, i := range []int{8, 9, 11, 12} {
		d := sha256.Sum256([]byte{byte(i)})
		if err := tpm.ExtendPCR(conn, i, d[:]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLedgerCommandsOnSwtpm(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	device := []string{"--tpm", sw.Spec(), "--data-dir", filepath.Join(dir, "data")}
	dev := func(args ...string) []string { return append(append([]string{}, device...), args...) }

	code, _, errOut := custodian(t, dev("ledger", "checkpoint")...)
	if code == 0 || !strings.Contains(errOut, "hint: run custodian enroll first") {
		t.Fatalf("before enrollment: exit %d, %q", code, errOut)
	}
	mustRun(t, dev("enroll", "--id", "court-a", "--out", filepath.Join(dir, "e.json"))...)
	code, _, errOut = custodian(t, dev("ledger", "init")...)
	if code == 0 || !strings.Contains(errOut, "never extended") {
		t.Fatalf("init on an unmeasured boot: exit %d, %q", code, errOut)
	}
	measureBoot(t, sw)
	out := mustRun(t, dev("ledger", "init")...)
	vkey := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])

	old := mustRun(t, dev("ledger", "checkpoint")...)
	if _, err := ledger.VerifyCheckpoint([]byte(old), vkey); err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, old)
	}
	oldPath := writeTemp(t, old)

	var inc ledger.Inclusion
	if err := json.Unmarshal([]byte(mustRun(t, dev("ledger", "prove", "--index", "0")...)), &inc); err != nil {
		t.Fatal(err)
	}
	e, err := inc.Check(vkey)
	if err != nil || e.Kind != ledger.KindInit {
		t.Fatalf("proof of the init entry: %v, %+v", err, e)
	}
	mustRun(t, dev("ledger", "verify", "--old", oldPath)...)

	public := filepath.Join(dir, "public")
	if out := mustRun(t, dev("ledger", "export", public)...); !strings.Contains(out, "exported the ledger of court-a (size 1)") || !strings.Contains(out, "3 files written, 0 already there") {
		t.Fatalf("export: %q", out)
	}
	if out := mustRun(t, dev("ledger", "export", public)...); !strings.Contains(out, "0 files written, 3 already there") {
		t.Fatalf("export again: %q", out)
	}
	if cp, err := os.ReadFile(filepath.Join(public, "checkpoint")); err != nil || string(cp) != old {
		t.Fatalf("the exported checkpoint is not the ledger's: %v\n%s", err, cp)
	}

	code, _, errOut = custodian(t, dev("ledger", "resolve-rollback")...)
	if code == 0 || !strings.Contains(errOut, "not blocked") {
		t.Fatalf("resolving a healthy ledger: exit %d, %q", code, errOut)
	}
	code, _, errOut = custodian(t, dev("ledger", "init")...)
	if code == 0 {
		t.Fatalf("init twice succeeded: %q", errOut)
	}
}

// TestTrustChangesAreLogged: once the ledger exists, every change to the
// court trust store is a ledger entry committing to what changed.
func TestTrustChangesAreLogged(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	d := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "data")}
	measureBoot(t, sw)
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", filepath.Join(dir, "e.json"))...)
	mustRun(t, d.args("ledger", "init")...)
	now := time.Now()
	root := trusttest.NewRoot(t, "Court Root", now)
	rootFile := writeTemp(t, string(trusttest.PEM(root.Cert)))
	mustRun(t, d.args("trust", "add-root", rootFile, "--court", "Test Court")...)
	mustRun(t, d.args("trust", "set-crl", writeTemp(t, string(trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour))))))...)

	var inc ledger.Inclusion
	if err := json.Unmarshal([]byte(mustRun(t, d.args("ledger", "prove", "--index", "2")...)), &inc); err != nil {
		t.Fatal(err)
	}
	vkey, _ := os.ReadFile(filepath.Join(d.data, "ledger-key.pub"))
	e, err := inc.Check(strings.TrimSpace(string(vkey)))
	if err != nil || e.Kind != ledger.KindTrust || e.Commitment == nil {
		t.Fatalf("entry 2: %+v, %v", e, err)
	}
}

// forgerCounter is an offline forger's counter: whatever the forger needs.
type forgerCounter struct{ v uint64 }

func (c *forgerCounter) Read() (uint64, error)             { return c.v, nil }
func (c *forgerCounter) Create() (uint64, error)           { return c.v, nil }
func (c *forgerCounter) Increment() (uint64, error)        { c.v++; return c.v, nil }
func (c *forgerCounter) IncrementChecked() (uint64, error) { return c.Increment() }

// TestInvariantStartupStateIsBoundToTPMLedgerVerifyRefusesPaddedCopy: a
// copy of the data directory from before two trust changes, padded offline
// with the ledger package and a fake counter until it matches the TPM, is
// not "healthy" to custodian ledger verify, which says what to do;
// resolve-rollback refuses it (its records are not the device's), and
// accepts the device's own copy put back.
func TestInvariantStartupStateIsBoundToTPMLedgerVerifyRefusesPaddedCopy(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	d := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "data")}
	measureBoot(t, sw)
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", filepath.Join(dir, "e.json"))...)
	mustRun(t, d.args("ledger", "init")...)
	snapshot := filepath.Join(dir, "copy")
	if err := os.CopyFS(snapshot, os.DirFS(d.data)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	root := trusttest.NewRoot(t, "Court Root", now)
	mustRun(t, d.args("trust", "add-root", writeTemp(t, string(trusttest.PEM(root.Cert))), "--court", "Test Court")...)
	mustRun(t, d.args("trust", "set-crl", writeTemp(t, string(trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour))))))...)

	// The forger restores the copy and pads it to the TPM's counter (3:
	// init and two trust entries), with a state key of its own.
	os.RemoveAll(d.data)
	if err := os.CopyFS(d.data, os.DirFS(snapshot)); err != nil {
		t.Fatal(err)
	}
	e, err := enrollment.Parse(readFile(t, filepath.Join(d.data, "enrollment.json")))
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tpm.ParseEK(e.EK.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range ledger.Files {
		if err := os.Remove(filepath.Join(d.data, name)); err != nil {
			t.Fatal(err)
		}
	}
	fake := &forgerCounter{}
	l, err := ledger.Create(d.data, ledger.Config{Origin: "custodian/court-a", Device: ek.Name(), Counter: fake,
		StateKey: make([]byte, ledger.StateKeySize)}, now)
	if err != nil {
		t.Fatal(err)
	}
	for fake.v < 3 {
		if _, err := l.Append(ledger.Entry{Time: now.UTC().Truncate(time.Second), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}, []byte("made up"), nil); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()

	code, _, errOut := custodian(t, d.args("ledger", "verify")...)
	if code == 0 || !strings.Contains(errOut, "not the state this TPM recorded") || !strings.Contains(errOut, "hint: ledger.db or its journal was edited") {
		t.Fatalf("ledger verify on a padded copy: exit %d, %q", code, errOut)
	}
	code, _, errOut = custodian(t, d.args("ledger", "resolve-rollback")...)
	if code == 0 || !strings.Contains(errOut, "resolve cannot accept them") || !strings.Contains(errOut, "hint: ledger.db or its journal was edited") {
		t.Fatalf("resolve-rollback on a padded copy: exit %d, %q", code, errOut)
	}
	// The copy the device wrote, put back, is only older: the operator
	// accepts it.
	os.RemoveAll(d.data)
	if err := os.CopyFS(d.data, os.DirFS(snapshot)); err != nil {
		t.Fatal(err)
	}
	mustRun(t, d.args("trust", "list")...)
	out := mustRun(t, d.args("ledger", "resolve-rollback")...)
	if !strings.Contains(out, "resolved") {
		t.Fatalf("resolve-rollback: %q", out)
	}
	mustRun(t, d.args("ledger", "verify")...)
}
