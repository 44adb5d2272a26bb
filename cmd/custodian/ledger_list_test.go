package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestLedgerListRangeOnSwtpm: ledger list prints the asked entries, each
// checked, as lines or JSON, and refuses a range outside the ledger with
// the ledger's bounds in the message.
func TestLedgerListRangeOnSwtpm(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	d := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "data")}
	measureBoot(t, sw)
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", filepath.Join(dir, "e.json"))...)
	mustRun(t, d.args("ledger", "init")...)
	now := time.Now()
	root := trusttest.NewRoot(t, "Court Root", now)
	mustRun(t, d.args("trust", "add-root", writeTemp(t, string(trusttest.PEM(root.Cert))), "--court", "Test Court")...)
	mustRun(t, d.args("trust", "set-crl", writeTemp(t, string(trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour))))))...)

	out := mustRun(t, d.args("ledger", "list")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], " init ") || !strings.Contains(lines[1], " trust ") ||
		!strings.Contains(lines[3], "3 entries (0 to 2) of custodian/court-a, each proven") {
		t.Fatalf("ledger list:\n%s", out)
	}

	var listing struct {
		Origin  string   `json:"origin"`
		Size    uint64   `json:"size"`
		Entries []listed `json:"entries"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, d.args("--json", "ledger", "list", "--from", "1", "--to", "2")...)), &listing); err != nil {
		t.Fatal(err)
	}
	var inc ledger.Inclusion
	json.Unmarshal([]byte(mustRun(t, d.args("ledger", "prove", "--index", "2")...)), &inc)
	if listing.Origin != "custodian/court-a" || listing.Size != 3 || len(listing.Entries) != 2 ||
		listing.Entries[0].Index != 1 || listing.Entries[1].Kind != ledger.KindTrust ||
		listing.Entries[1].Commitment == "" || listing.Entries[1].Entry != inc.Entry {
		t.Fatalf("--json listing: %+v", listing)
	}

	for args, says := range map[string]string{
		"--from 2 --to 1": "from 2 is after to 1",
		"--to 3":          "entry 3 does not exist yet (the ledger has 3 entries, 0 to 2)",
		"--from 5":        "entry 5 does not exist yet",
		"--from -1":       "entry indexes start at 0",
	} {
		code, _, errOut := custodian(t, d.args(append([]string{"ledger", "list"}, strings.Fields(args)...)...)...)
		if code == 0 || !strings.Contains(errOut, says) || !strings.Contains(errOut, "hint: ") {
			t.Errorf("%s: exit %d, %q; want %q", args, code, errOut, says)
		}
	}
}

// growingRange appends an entry to the ledger after the first page, as a
// running appliance would between two answers.
type growingRange struct {
	localRange
	grow func()
	done bool
}

func (s *growingRange) prove(from, to int64) (*ledger.RangeProof, error) {
	rp, err := s.localRange.prove(from, to)
	if !s.done {
		s.done = true
		s.grow()
	}
	return rp, err
}

// TestLedgerListPagesProveOneHistory: a long range is read in pages; a
// ledger that grew between pages must prove that its new checkpoint
// extends the one before, and the listing ends with the newer checkpoint.
func TestLedgerListPagesProveOneHistory(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	d := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "data")}
	measureBoot(t, sw)
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", filepath.Join(dir, "e.json"))...)
	mustRun(t, d.args("ledger", "init")...)

	var stdout bytes.Buffer
	g := &globals{dataDir: d.data, tpmSpec: sw.Spec(), stdout: &stdout, stderr: &stdout}
	err := g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
		appendRefusal := func() {
			e := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "no-press"}
			if _, err := a.Ledger.Append(e, []byte("a warrant"), nil); err != nil {
				t.Fatal(err)
			}
		}
		for range 4 {
			appendRefusal()
		}
		src := &growingRange{localRange: localRange{a.Ledger, a.VerifierKey}, grow: appendRefusal}
		return (&listRun{g: g, src: src, page: 2}).list(0, 4) // pages 0-1, 2-3, 4
	})
	if err != nil {
		t.Fatal(err)
	}
	out := stdout.String()
	if !strings.Contains(out, "5 entries (0 to 4) of custodian/court-a, each proven in its signed checkpoint (now 6 entries)") ||
		strings.Count(out, " refusal ") != 4 {
		t.Fatalf("listing:\n%s", out)
	}
}
