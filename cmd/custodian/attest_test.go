package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func TestAttestAndVerifyOnSwtpm(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	root := measuretest.Root("config")
	spec := measure.DefaultSpec()
	policy, err := spec.Predict(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	policyData, _ := policy.Marshal()
	policyFile := filepath.Join(dir, "policy.json")
	os.WriteFile(policyFile, policyData, 0o644)
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := measure.Boot(conn, spec, root, runDir); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	d := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "data")}
	enrollmentFile := filepath.Join(dir, "enrollment.json")
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", enrollmentFile)...)
	mustRun(t, d.args("ledger", "init")...)
	roots := filepath.Join(dir, "roots.pem")
	writeSwtpmRoots(t, sw, roots)

	nonce := "00112233445566778899aabbccddeeff"
	att := filepath.Join(dir, "att.json")
	mustRun(t, d.args("attest", "--nonce", nonce, "--out", att, "--event-log", filepath.Join(runDir, measure.LogFile))...)
	verify := []string{"attest", "verify", "--enrollment", enrollmentFile, "--policy", policyFile, "--in", att,
		"--ek-roots", roots, "--allow-unbound-ak", "--ledger-key", filepath.Join(d.data, "ledger-key.pub")}
	out := mustRun(t, append(verify, "--nonce", nonce)...)
	if !strings.Contains(out, "verifies") || !strings.Contains(out, "checkpoint of 1 entries") {
		t.Fatalf("verify said %q", out)
	}
	code, _, errOut := custodian(t, append(verify, "--nonce", "ffffffffffffffff")...)
	if code == 0 || !strings.Contains(errOut, "attestation does not verify") {
		t.Fatalf("another nonce: exit %d, %q", code, errOut)
	}
}
