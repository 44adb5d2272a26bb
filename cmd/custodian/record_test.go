package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// auditorSetup is a device enrolled with the authority's challenge and a
// record published, and what an auditor holds.
type auditorSetup struct {
	dir, enrollment, request, policy, roots, ledgerKey, authorityKey, authorityPub, record string
	attest                                                                                 func(nonce string) string
	sw                                                                                     *tpmtest.Swtpm
}

// newAuditorSetup runs the operator's and the escrow authority's runbook
// steps on swtpm: measured boot, enroll with a challenge, record key,
// enroll verify with --record-out, ledger init.
func newAuditorSetup(t *testing.T) *auditorSetup {
	t.Helper()
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	s := &auditorSetup{dir: dir, sw: sw}
	path := func(name string) string { return filepath.Join(dir, name) }
	runDir := path("run")
	root := measuretest.Root("config")
	spec := measure.DefaultSpec()
	policy, err := spec.Predict(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	policyData, _ := policy.Marshal()
	s.policy = path("policy.json")
	os.WriteFile(s.policy, policyData, 0o644)
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := measure.Boot(conn, spec, root, runDir); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	d := &device{id: "court-a", sw: sw, data: path("data")}
	s.request, s.enrollment = path("request.json"), path("enrollment.json")
	s.roots = path("ek-roots.pem")
	writeSwtpmRoots(t, sw, s.roots)
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", s.request)...)
	mustRun(t, "enroll", "challenge", "--in", s.request, "--out", path("challenge.json"), "--secret-out", path("challenge.secret"))
	mustRun(t, d.args("enroll", "--id", "court-a", "--challenge", path("challenge.json"), "--out", s.enrollment)...)
	mustRun(t, d.args("ledger", "init")...)
	s.ledgerKey = filepath.Join(d.data, "ledger-key.pub")

	// The escrow authority: its record key, once, then the record.
	s.authorityKey, s.authorityPub, s.record = path("authority.key"), path("authority.pub"), path("court-a.record")
	out := mustRun(t, "enroll", "keygen", "--out", s.authorityKey, "--pub", s.authorityPub)
	pub, _ := os.ReadFile(s.authorityPub)
	if info, err := os.Stat(s.authorityKey); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("the authority's private key: %v, %v", info, err)
	}
	if !strings.Contains(out, strings.TrimSpace(string(pub))) {
		t.Fatalf("keygen did not print the verifier key: %q", out)
	}
	mustRun(t, "enroll", "verify", "--in", s.enrollment, "--secret", path("challenge.secret"), "--ek-roots", s.roots,
		"--record-out", s.record, "--signing-key", s.authorityKey, "--serial", "1")

	s.attest = func(nonce string) string {
		att := path("att-" + nonce + ".json")
		mustRun(t, d.args("attest", "--nonce", nonce, "--out", att, "--event-log", filepath.Join(runDir, measure.LogFile))...)
		return att
	}
	return s
}

// verifyArgs is the auditor's command line: no secret anywhere.
func (s *auditorSetup) verifyArgs(nonce, att, record string) []string {
	return []string{"attest", "verify", "--enrollment", s.enrollment, "--policy", s.policy, "--nonce", nonce, "--in", att,
		"--ek-roots", s.roots, "--ledger-key", s.ledgerKey, "--record", record, "--authority-key", s.authorityPub}
}

// TestAuditorVerifiesAttestationWithPublishedRecord follows docs/auditor.md
// with what the escrow authority publishes (its verifier key and the
// enrollment's record): the attestation verifies without the challenge
// secret, and without secret or record the AK is not trusted.
func TestAuditorVerifiesAttestationWithPublishedRecord(t *testing.T) {
	s := newAuditorSetup(t)
	nonce := "00112233445566778899aabbccddeeff"
	att := s.attest(nonce)
	out := mustRun(t, s.verifyArgs(nonce, att, s.record)...)
	if !strings.Contains(out, "attestation of court-a verifies") || !strings.Contains(out, "checkpoint of 1 entries") {
		t.Fatalf("verify said %q", out)
	}
	// The enrollment alone checks with the record too.
	out = mustRun(t, "enroll", "verify", "--in", s.enrollment, "--ek-roots", s.roots, "--record", s.record, "--authority-key", s.authorityPub)
	if !strings.Contains(out, "AK bound to EK: yes") {
		t.Fatalf("enroll verify with the record said %q", out)
	}
	noRecord := s.verifyArgs(nonce, att, s.record)[:14]
	code, _, errOut := custodian(t, noRecord...)
	if code == 0 || !strings.Contains(errOut, "not proven") || !strings.Contains(errOut, "--record") {
		t.Fatalf("without secret or record: exit %d, %q", code, errOut)
	}
}

// TestInvariantAttestVerifyRefusesBadRecords: the auditor's attest verify
// refuses a record signed by another key, an altered one, one for
// another custodian, EK or AK than the attestation's enrollment, and a
// refused verdict, each naming its cause; and the authority writes a record
// only from the secret it verified with, never over an existing one.
func TestInvariantAttestVerifyRefusesBadRecords(t *testing.T) {
	s := newAuditorSetup(t)
	nonce := "00112233445566778899aabbccddeeff"
	att := s.attest(nonce)
	signed, key := mustRead(t, s.record), mustRead(t, s.authorityKey)
	opened, err := enrollment.OpenRecord(signed, string(mustRead(t, s.authorityPub)))
	if err != nil {
		t.Fatal(err)
	}
	otherName := append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{9}, 32)...)
	resign := func(f func(r *enrollment.Record)) []byte {
		r := *opened
		f(&r)
		out, err := r.Sign(string(key))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	otherKey := filepath.Join(s.dir, "other.key")
	mustRun(t, "enroll", "keygen", "--name", "custodian-escrow-authority", "--out", otherKey, "--pub", filepath.Join(s.dir, "other.pub"))
	otherSigned, _ := (*opened).Sign(string(mustRead(t, otherKey)))

	// The authority refuses the device deliberately.
	refusedRecord := filepath.Join(s.dir, "refused.record")
	code, _, errOut := custodian(t, "enroll", "verify", "--in", s.enrollment, "--refuse", "ak-unbound",
		"--record-out", refusedRecord, "--signing-key", s.authorityKey, "--serial", "2")
	if code != 0 || !strings.Contains(errOut, "record 2 of court-a (refused) written to") {
		t.Fatalf("signing a refusal: exit %d, %q", code, errOut)
	}
	refused := mustRead(t, refusedRecord)

	for name, c := range map[string]struct {
		record []byte
		says   string
	}{
		"another key":       {otherSigned, "not signed by the escrow authority's key you pinned"},
		"altered":           {bytes.Replace(signed, []byte("verdict verified"), []byte("verdict refused"), 1), "it was altered after signing"},
		"another custodian": {resign(func(r *enrollment.Record) { r.CustodianID = "court-b" }), "it is for custodian court-b"},
		"another EK":        {resign(func(r *enrollment.Record) { r.EKName = otherName }), "another endorsement key"},
		"another AK":        {resign(func(r *enrollment.Record) { r.AKName = otherName }), "another attestation key"},
		"refused verdict":   {refused, "refused this enrollment"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "record")
			os.WriteFile(path, c.record, 0o644)
			code, out, errOut := custodian(t, s.verifyArgs(nonce, att, path)...)
			if code == 0 || !strings.Contains(errOut, c.says) || !strings.Contains(errOut, "hint: ") || strings.Contains(out, "verifies") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q", code, out, errOut, c.says)
			}
		})
	}
	secret := filepath.Join(s.dir, "challenge.secret")
	newRecord := filepath.Join(s.dir, "new.record")
	for name, c := range map[string]struct {
		args []string
		says string
	}{
		"record and secret": {append(s.verifyArgs(nonce, att, s.record), "--secret", secret), "give one"},
		"record without key": {[]string{"enroll", "verify", "--in", s.enrollment, "--ek-roots", s.roots, "--record", s.record},
			"--record needs --authority-key"},
		"record from a record": {[]string{"enroll", "verify", "--in", s.enrollment, "--ek-roots", s.roots, "--record", s.record,
			"--authority-key", s.authorityPub, "--record-out", newRecord, "--signing-key", s.authorityKey, "--serial", "2"}, "not from another record"},
		"record of an unbound AK": {[]string{"enroll", "verify", "--in", s.enrollment, "--ek-roots", s.roots, "--allow-unbound-ak",
			"--record-out", newRecord, "--signing-key", s.authorityKey, "--serial", "2"}, "cannot vouch"},
		"record over a record": {[]string{"enroll", "verify", "--in", s.enrollment, "--ek-roots", s.roots, "--secret", secret,
			"--record-out", s.record, "--signing-key", s.authorityKey, "--serial", "2"}, "hint: remove it first or choose another --record-out"},
		"record without a serial": {[]string{"enroll", "verify", "--in", s.enrollment, "--ek-roots", s.roots, "--secret", secret,
			"--record-out", newRecord, "--signing-key", s.authorityKey}, "--record-out needs --serial"},
		"an unknown reason": {[]string{"enroll", "verify", "--in", s.enrollment, "--refuse", "because",
			"--record-out", newRecord, "--signing-key", s.authorityKey, "--serial", "2"}, "not a reason"},
	} {
		code, _, errOut := custodian(t, c.args...)
		if code == 0 || !strings.Contains(errOut, c.says) || !strings.Contains(errOut, "hint: ") {
			t.Errorf("%s: exit %d, %q; want %q", name, code, errOut, c.says)
		}
	}
	if _, err := os.Stat(newRecord); err == nil {
		t.Error("a refused flag combination wrote a record")
	}
}
