package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// device is one custodian appliance driven through the command line.
type device struct {
	id   string
	sw   *tpmtest.Swtpm
	data string
}

func (d *device) args(args ...string) []string {
	return append([]string{"--tpm", d.sw.Spec(), "--data-dir", d.data}, args...)
}

// enrollDevice runs the enrollment exchange and measures a boot.
func enrollDevice(t *testing.T, id, dir string) (*device, string, string) {
	t.Helper()
	d := &device{id: id, sw: tpmtest.StartSwtpm(t), data: filepath.Join(dir, id)}
	request := filepath.Join(dir, id+".request.json")
	final := filepath.Join(dir, id+".enrollment.json")
	challenge := filepath.Join(dir, id+".challenge.json")
	secret := filepath.Join(dir, id+".secret")
	measureBoot(t, d.sw)
	mustRun(t, d.args("enroll", "--id", id, "--out", request)...)
	mustRun(t, "enroll", "challenge", "--in", request, "--out", challenge, "--secret-out", secret)
	mustRun(t, d.args("enroll", "--id", id, "--challenge", challenge, "--out", final)...)
	mustRun(t, d.args("ledger", "init")...)
	return d, final, secret
}

// releaseFile does what the appliance does for an approved warrant: open the
// share in the TPM and seal it to the agency.
func releaseFile(t *testing.T, d *device, keyID, agencyPub, out string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.data, "bundles", keyID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := escrow.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := tpm.ParseBlob(b.Blob)
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	share, err := tpm.Unseal(conn, blob)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	to, err := recipient.ParsePublicKey(strings.TrimSpace(agencyPub))
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("warrant"))
	r, err := escrow.SealShare(to, digest[:], d.id, keyID, b.Index, share)
	if err != nil {
		t.Fatal(err)
	}
	rdata, _ := r.Marshal()
	if err := os.WriteFile(out, rdata, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEscrowStoryOnTheCommandLine: three devices enroll, a 2-of-3
// ceremony seals to a policy recorded from one of them, each device
// provisions, an envelope is sealed, two releases recover the key, and
// the envelope opens to the same bytes.
func TestEscrowStoryOnTheCommandLine(t *testing.T) {
	dir := t.TempDir()
	var devices []*device
	var ceremonyArgs []string
	var roots []byte
	for _, id := range []string{"court-a", "court-b", "court-c"} {
		d, enrollment, secret := enrollDevice(t, id, dir)
		devices = append(devices, d)
		ceremonyArgs = append(ceremonyArgs, "--enrollment", enrollment, "--secret", id+"="+secret)
		rootsFile := filepath.Join(dir, id+".ek-ca.pem")
		writeSwtpmRoots(t, d.sw, rootsFile)
		pem, _ := os.ReadFile(rootsFile)
		roots = append(roots, pem...)
	}
	rootsFile := filepath.Join(dir, "ek-cas.pem")
	os.WriteFile(rootsFile, roots, 0o644)
	policy := filepath.Join(dir, "policy.json")
	mustRun(t, "policy", "from-enrollment", "--in", filepath.Join(dir, "court-a.enrollment.json"),
		"--secret", filepath.Join(dir, "court-a.secret"), "--ek-roots", rootsFile, "--security-version", "1", "--out", policy)

	out := filepath.Join(dir, "ceremony")
	mustRun(t, append([]string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--mode", "share", "--policy", policy,
		"--ek-roots", rootsFile, "--out", out}, ceremonyArgs...)...)
	code, _, errOut := custodian(t, append([]string{"ceremony", "--key-id", "2026-11", "--threshold", "4",
		"--policy", policy, "--ek-roots", rootsFile, "--out", filepath.Join(dir, "c2")}, ceremonyArgs...)...)
	if code == 0 || !strings.Contains(errOut, "threshold 4") {
		t.Fatalf("threshold above n: exit %d, %q", code, errOut)
	}

	// A bundle given to the wrong device is refused.
	code, _, errOut = custodian(t, devices[1].args("provision", "--bundle", filepath.Join(out, "court-a.bundle.json"))...)
	if code == 0 || !strings.Contains(errOut, "another custodian") {
		t.Fatalf("court-a's bundle on court-b: exit %d, %q", code, errOut)
	}
	for _, d := range devices {
		mustRun(t, d.args("provision", "--bundle", filepath.Join(out, d.id+".bundle.json"))...)
	}

	escrowFile := filepath.Join(out, "escrow-2026-11.pub.json")
	message := filepath.Join(dir, "message.txt")
	os.WriteFile(message, []byte("the intercepted conversation"), 0o600)
	mustRun(t, "escrow", "seal", "--escrow", escrowFile, "--target", "+1 555 0100", "--in", message, "--out", message+".env")

	mustRun(t, "agency", "keygen", "--out", filepath.Join(dir, "agency.key"), "--pub", filepath.Join(dir, "agency.pub"))
	agencyPub, _ := os.ReadFile(filepath.Join(dir, "agency.pub"))
	var releases []string
	for _, d := range devices[1:] {
		r := filepath.Join(dir, d.id+".release.json")
		releaseFile(t, d, "2026-11", string(agencyPub), r)
		releases = append(releases, "--release", r)
	}
	key := filepath.Join(dir, "escrow-2026-11.key")
	mustRun(t, append([]string{"recover", "--identity", filepath.Join(dir, "agency.key"), "--escrow", escrowFile,
		"--out", key}, releases...)...)
	if info, err := os.Stat(key); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}
	opened := filepath.Join(dir, "opened.txt")
	mustRun(t, "escrow", "open", "--key", key, "--in", message+".env", "--out", opened)
	got, _ := os.ReadFile(opened)
	if !bytes.Equal(got, []byte("the intercepted conversation")) {
		t.Fatalf("opened %q", got)
	}

	// One release is not enough.
	code, _, errOut = custodian(t, "recover", "--identity", filepath.Join(dir, "agency.key"), "--escrow", escrowFile,
		"--out", filepath.Join(dir, "k2"), releases[0], releases[1])
	if code == 0 || !strings.Contains(errOut, "not enough valid shares") {
		t.Fatalf("one release: exit %d, %q", code, errOut)
	}

	// escrow open takes a key or releases, not both and not neither, and
	// writes nothing when it refuses.
	for _, args := range [][]string{
		{"--key", key, releases[0], releases[1]},
		{},
	} {
		out := filepath.Join(dir, "not-written.txt")
		code, _, errOut = custodian(t, append([]string{"escrow", "open", "--in", message + ".env", "--out", out}, args...)...)
		if _, err := os.Stat(out); code == 0 || err == nil || !strings.Contains(errOut, "give either --key or --release") {
			t.Fatalf("escrow open %v: exit %d, %q", args, code, errOut)
		}
	}
}

// TestProvisionAfterPCRChangeIsRefused boots a changed image before
// provisioning: the bundle does not open.
func TestProvisionAfterPCRChangeIsRefused(t *testing.T) {
	dir := t.TempDir()
	a, ea, sa := enrollDevice(t, "court-a", dir)
	b, eb, sb := enrollDevice(t, "court-b", dir)
	policy := filepath.Join(dir, "policy.json")
	roots := filepath.Join(dir, "roots.pem")
	writeSwtpmRoots(t, a.sw, roots)
	rootsB := filepath.Join(dir, "roots-b.pem")
	writeSwtpmRoots(t, b.sw, rootsB)
	both, _ := os.ReadFile(roots)
	more, _ := os.ReadFile(rootsB)
	os.WriteFile(roots, append(both, more...), 0o644)
	common := []string{"--ek-roots", roots}
	mustRun(t, append([]string{"policy", "from-enrollment", "--in", ea, "--secret", sa, "--security-version", "1", "--out", policy}, common...)...)
	out := filepath.Join(dir, "ceremony")
	mustRun(t, append([]string{"ceremony", "--key-id", "k1", "--threshold", "2", "--policy", policy, "--out", out,
		"--enrollment", ea, "--secret", "court-a=" + sa, "--enrollment", eb, "--secret", "court-b=" + sb}, common...)...)
	measureBoot(t, b.sw) // extends again: PCRs no longer the policy's
	code, _, errOut := custodian(t, b.args("provision", "--bundle", filepath.Join(out, "court-b.bundle.json"))...)
	if code == 0 || !strings.Contains(errOut, "PCRs do not hold") {
		t.Fatalf("provision after a PCR change: exit %d, %q", code, errOut)
	}
	mustRun(t, a.args("provision", "--bundle", filepath.Join(out, "court-a.bundle.json"))...)
}
