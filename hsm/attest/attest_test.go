package attest_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/attest"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/internal/strictjson/strictjsontest"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func TestAttestationVerifiesAgainstEnrollmentPolicyAndLedger(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		spec := measure.DefaultSpec()
		policy, err := spec.Predict(measuretest.Root("listen = ':8443'"), nil)
		if err != nil {
			t.Fatal(err)
		}
		runDir, dataDir := t.TempDir(), t.TempDir()
		if _, err := measure.Boot(conn, spec, measuretest.Root("listen = ':8443'"), runDir); err != nil {
			t.Fatal(err)
		}
		eventLog, err := os.ReadFile(filepath.Join(runDir, measure.LogFile))
		if err != nil {
			t.Fatal(err)
		}
		e, err := enrollment.Create(conn, "court-a", tpm.EKRSA2048, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(e)
		os.WriteFile(filepath.Join(dataDir, appliance.EnrollmentFile), data, 0o644)
		a, err := appliance.Init(dataDir, conn, spec.PCRs(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		oldCheckpoint, _ := a.Ledger.Checkpoint()
		trustChange := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
		if _, err := a.Ledger.Append(trustChange, []byte("new court root"), nil); err != nil {
			t.Fatal(err)
		}
		checkpoint, err := a.Ledger.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		nonce := []byte("a fresh nonce from the auditor")
		att, err := attest.Create(conn, "court-a", nonce, spec.PCRs(), eventLog, string(checkpoint), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(att)
		if att, err = attest.Parse(raw); err != nil {
			t.Fatal(err)
		}
		want := attest.Expect{Enrollment: e, Policy: policy, Nonce: nonce, LedgerKey: a.VerifierKey}
		r, err := att.Verify(want)
		if err != nil {
			t.Fatal(err)
		}
		if r.LedgerSize != 2 || r.LogEvents != len(policy.Events) {
			t.Fatalf("result %+v", r)
		}

		otherPolicy, _ := spec.Predict(measuretest.Root("listen = ':9443'"), nil)
		otherDevice := *e
		otherDevice.AK = tamperedAK(t, e.AK)
		flippedLog := bytes.Clone(eventLog)
		flippedLog[len(flippedLog)-1] ^= 1
		cases := map[string]func(w *attest.Expect, a *attest.Attestation){
			"other nonce":         func(w *attest.Expect, _ *attest.Attestation) { w.Nonce = []byte("another nonce!!") },
			"other image":         func(w *attest.Expect, _ *attest.Attestation) { w.Policy = otherPolicy },
			"other device's AK":   func(w *attest.Expect, _ *attest.Attestation) { w.Enrollment = &otherDevice },
			"older checkpoint":    func(_ *attest.Expect, a *attest.Attestation) { a.Checkpoint = string(oldCheckpoint) },
			"altered event log":   func(_ *attest.Expect, a *attest.Attestation) { a.EventLog = flippedLog },
			"wrong ledger key":    func(w *attest.Expect, _ *attest.Attestation) { w.LedgerKey = otherLedgerKey(t) },
			"no ledger key":       func(w *attest.Expect, _ *attest.Attestation) { w.LedgerKey = "" },
			"altered quoted PCRs": func(_ *attest.Expect, a *attest.Attestation) { a.PCRs = a.PCRs.Extend(8, make([]byte, 32)) },
			"claims another name": func(_ *attest.Expect, a *attest.Attestation) { a.CustodianID = "court-b" },
		}
		for name, mutate := range cases {
			t.Run(name, func(t *testing.T) {
				w := want
				copy, _ := attest.Parse(raw)
				mutate(&w, copy)
				if _, err := copy.Verify(w); !errors.Is(err, attest.ErrMismatch) {
					t.Fatalf("got %v, want ErrMismatch", err)
				}
			})
		}

		// A checkpoint of another custodian's ledger, quoted by this TPM,
		// does not tie the attestation to court-a, even with the key
		// that signed it.
		private, verifier, err := note.GenerateKey(rand.Reader, "custodian/court-b")
		if err != nil {
			t.Fatal(err)
		}
		signer, _ := note.NewSigner(private)
		_, body, _ := strings.Cut(string(checkpoint), "\n")
		body, _, _ = strings.Cut(body, "\n\n")
		foreign, err := note.Sign(&note.Note{Text: "custodian/court-b\n" + body + "\n"}, signer)
		if err != nil {
			t.Fatal(err)
		}
		relabelled, err := attest.Create(conn, "court-a", nonce, spec.PCRs(), eventLog, string(foreign), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		w0 := want
		w0.LedgerKey = verifier
		if _, err := relabelled.Verify(w0); !errors.Is(err, attest.ErrMismatch) || !strings.Contains(err.Error(), "not of court-a's ledger") {
			t.Fatalf("another custodian's checkpoint: %v", err)
		}

		// A policy recorded from a measurement has no events; the log must
		// still replay to the quoted PCRs.
		measured, err := bootpolicy.FromMeasurement("court-a", att.PCRs, 1)
		if err != nil {
			t.Fatal(err)
		}
		w := want
		w.Policy = measured
		if _, err := att.Verify(w); err != nil {
			t.Fatalf("measured policy: %v", err)
		}
		bad, _ := attest.Parse(raw)
		bad.EventLog = flippedLog
		if _, err := bad.Verify(w); !errors.Is(err, attest.ErrMismatch) {
			t.Fatalf("measured policy, altered log: %v", err)
		}
	})
}

// tamperedAK returns a valid AK public area of a different key.
func tamperedAK(t *testing.T, _ []byte) []byte {
	t.Helper()
	conn := tpmtest.StartSwtpm(t).Open(t)
	other, err := tpm.LoadAK(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	return other.Public.Marshal()
}

func otherLedgerKey(t *testing.T) string {
	t.Helper()
	return "custodian/court-a+00000000+AXu+fake+key+for+tests+only+000000000000000="
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"custodian_id":"court-a","nonce":"AAAA","pcrs":{},"event_log":"","checkpoint":"","quote":{"attest":"","signature":""},"time":"2026-11-25T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := attest.Parse(data)
		if err != nil {
			return
		}
		if a.Version != attest.Version || enrollment.CheckID(a.CustodianID) != nil {
			t.Fatalf("accepted version %d, custodian %q", a.Version, a.CustodianID)
		}
		strictjsontest.Accepted(t, data, a, attest.Parse)
	})
}
