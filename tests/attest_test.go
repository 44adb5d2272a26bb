package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootmeasure "github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestAttestationOverHTTP: an appliance that really ran measure-boot
// answers an auditor's nonce through the daemon, and the answer verifies
// against its enrollment, the image policy and its ledger key; another
// nonce does not.
func TestAttestationOverHTTP(t *testing.T) {
	tpmtest.RequireSwtpm(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	d := &device{id: "court-a", sw: tpmtest.StartSwtpm(t), data: p("court-a")}
	spec := bootmeasure.DefaultSpec()
	root := measuretest.Root("listen = ':8443'")
	policy, err := spec.Predict(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	policyData, _ := policy.Marshal()
	os.WriteFile(p("policy.json"), policyData, 0o644)
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bootmeasure.Boot(conn, spec, root, p("run")); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	mustCLI(t, d.args("enroll", "--id", "court-a", "--out", p("request.json"))...)
	mustCLI(t, "enroll", "challenge", "--in", p("request.json"), "--out", p("challenge.json"), "--secret-out", p("secret"))
	mustCLI(t, d.args("enroll", "--id", "court-a", "--challenge", p("challenge.json"), "--out", p("enrollment.json"))...)
	mustCLI(t, d.args("ledger", "init")...)
	var roots []byte
	for _, name := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		pem, err := os.ReadFile(filepath.Join(d.sw.Dir, "ca", name))
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, pem...)
	}
	os.WriteFile(p("ek-ca.pem"), roots, 0o644)

	dm := startDaemon(t, d, "--event-log", filepath.Join(p("run"), bootmeasure.LogFile))
	nonce := "0123456789abcdef0123456789abcdef"
	mustCLI(t, append([]string{"attest", "--server", dm.client.base, "--nonce", nonce, "--out", p("att.json")}, dm.auditorArgs()...)...)
	verify := []string{"attest", "verify", "--enrollment", p("enrollment.json"), "--policy", p("policy.json"),
		"--in", p("att.json"), "--secret", p("secret"), "--ek-roots", p("ek-ca.pem"),
		"--ledger-key", filepath.Join(d.data, "ledger-key.pub")}
	out := mustCLI(t, append(verify, "--nonce", nonce)...)
	if !strings.Contains(out, "verifies") {
		t.Fatalf("attest verify said %q", out)
	}
	if code, _, errOut := cli(t, append(verify, "--nonce", "ffffffffffffffffffffffffffffffff")...); code == 0 || !strings.Contains(errOut, "does not verify") {
		t.Fatalf("another nonce: exit %d, %q", code, errOut)
	}
}
