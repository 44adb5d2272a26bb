package tests

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/image/layout"
	"github.com/custodian-project/custodian/image/qemutest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// applianceCourt is the emulated appliance's court.
const applianceCourt = "District-Court"

// The emulated appliance's console commands run the arm64 binary without
// KVM: each takes seconds, a TPM key generation on a busy machine longer.
const (
	bootLimit    = 4 * time.Minute
	commandLimit = 3 * time.Minute
)

// TestApplianceBootsMeasuresAndReleases is the appliance's acceptance test
// on an emulated board: the image built from a manifest like the
// example's (Debian's arm64 kernel, the custodian binary for linux/arm64
// as the initramfs's /init and the root's binary) boots under QEMU with
// swtpm as its TPM. It shows
//
//   - the initramfs measured the root (its marker lines), and a quote of
//     the PCRs, verified on the host with the enrolled attestation key,
//     equals custodian image measure's prediction;
//   - through the serial console and its put/get alone the device is
//     enrolled (the escrow authority's side on the host), creates its
//     ledger, is provisioned from a 2-of-3 ceremony whose other two
//     custodians run on host swtpms that replayed the same measurements,
//     and gets its court's trust root and CRL (its TLS files are put on
//     the data partition before the first boot, as the operator does);
//   - the daemon comes up and answers an attestation and a release over
//     the emulated network, the simulated button pressed through the
//     console, and the released share with a host custodian's share
//     opens an envelope sealed before;
//   - after a power cut the device measures the same PCRs, serves again
//     and refuses the released warrant as replayed.
//
// The device runs the default build (its simulated button), not
// -tags appliance; README's "The emulated boot" says what only a real Pi
// shows.
func TestApplianceBootsMeasuresAndReleases(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	k := qemutest.RequireKernel(t)
	tpmtest.RequireSwtpm(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()
	policy, root := qemuImage(t, k, dir)
	judgeKey := trusttest.ECKeyP256(t)
	judge := root.Judge(t, "Judge Ada", judgeKey.Public(), now)

	// The daemon's TLS files go onto the data partition from the build
	// host, as docs/operator.md has the operator do before the first boot.
	site := newSite(t)
	qemutest.WriteDataFiles(t, p("custodian.img"), map[string][]byte{
		"tls/server.pem": readFileT(t, site.ServerCert), "tls/server.key": readFileT(t, site.ServerKey),
		"tls/officer-ca.pem": readFileT(t, site.OfficerCA),
	})

	booted := time.Now()
	boot := qemutest.Config{
		Kernel: p("kernel8.img"), Initrd: p("initramfs.img"), Disk: p("custodian.img"),
		Append: "rdinit=/init custodian.boot_partition=2 quiet", Forward: 8443,
	}
	m := qemutest.Boot(t, boot)
	expectMeasured(t, m, policy)
	console, err := m.Console(bootLimit, commandLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the console's first prompt %v after QEMU started", time.Since(booted).Round(100*time.Millisecond))

	enrollOverConsole(t, console, dir, "court-a")
	verifier := ledgerKeyFrom(t, console.MustRun("ledger init"))

	hosts := ceremonyWithHostCustodians(t, dir, m, policy)
	console.MustPut("bundle.json", readFileT(t, p("ceremony/court-a.bundle.json")))
	console.MustRun("provision --bundle bundle.json")
	mustCLI(t, hosts[0].args("provision", "--bundle", p("ceremony/court-b.bundle.json"))...)

	// The court's root and CRL, on the appliance and on court-b.
	writeFile(t, p("root.pem"), trusttest.PEM(root.Cert))
	writeFile(t, p("crl.pem"), trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))))
	console.MustPut("root.pem", readFileT(t, p("root.pem")))
	console.MustRun("trust add-root root.pem --court " + applianceCourt)
	console.MustPut("crl.pem", readFileT(t, p("crl.pem")))
	console.MustRun("trust set-crl crl.pem")
	mustCLI(t, hosts[0].args("trust", "add-root", p("root.pem"), "--court", applianceCourt)...)
	mustCLI(t, hosts[0].args("trust", "set-crl", p("crl.pem"))...)

	// The daemon serves: an attestation checked against the policy, then
	// a release approved with the simulated button.
	base := "https://" + m.Addr
	waitServing(t, console, base, site)
	t.Logf("the daemon serves %v after QEMU started (setup through the console included)", time.Since(booted).Round(100*time.Millisecond))
	nonce := make([]byte, 16)
	rand.Read(nonce)
	mustCLI(t, "attest", "--server", base, "--ca", site.ServerCA, "--nonce", hex.EncodeToString(nonce), "--out", p("att.json"))
	mustCLI(t, "attest", "verify", "--enrollment", p("court-a.enrollment.json"), "--secret", p("court-a.secret"),
		"--ek-roots", p("ek-cas.pem"), "--policy", p("policy.json"), "--nonce", hex.EncodeToString(nonce),
		"--ledger-key", verifier, "--in", p("att.json"))

	// A warrant for key ID 2026-11, signed by the court's judge; the
	// officer submits it over the emulated network and presses the
	// button through the console.
	message := []byte("the intercepted conversation")
	writeFile(t, p("message.txt"), message)
	escrowFile := p("ceremony/escrow-2026-11.pub.json")
	mustCLI(t, "escrow", "seal", "--escrow", escrowFile, "--target", "alice@example.org", "--in", p("message.txt"), "--out", p("message.env"))
	mustCLI(t, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	mustCLI(t, "warrant", "new", "--serial", "W-2026-0042", "--docket", "CR-1/2026", "--court", applianceCourt,
		"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
		"--target", "alice@example.org", "--key-id", "2026-11",
		"--custodian", "court-a", "--custodian", "court-b", "--custodian", "court-c", "--recipient", p("agency.pub"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--out", p("w.json"))
	p7s, err := warrant.Sign(readFileT(t, p("w.json")), []warrant.Signer{{Key: judgeKey, Chain: []*x509.Certificate{judge}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("w.p7s"), p7s)
	code, stdout, stderr := releasePressing(t, base, p("w.p7s"), p("court-a.release.json"), site.officerArgs(), func() {
		console.MustRun("button press")
	})
	if code != 0 {
		t.Fatalf("release from the emulated appliance: exit %d\n%s%s", code, stdout, stderr)
	}
	checkApplianceRelease(t, p("court-a.release.json"), "court-a", verifier)

	// court-b, on the host, releases too; the two shares open the envelope.
	dm := startDaemon(t, hosts[0])
	code, stdout, stderr = releaseWithPress(t, hosts[0], dm, p("w.p7s"), p("court-b.release.json"))
	if code != 0 {
		t.Fatalf("release from court-b: exit %d\n%s%s", code, stdout, stderr)
	}
	mustCLI(t, "recover", "--identity", p("agency.key"), "--escrow", escrowFile, "--out", p("escrow.key"),
		"--release", p("court-a.release.json"), "--release", p("court-b.release.json"))
	mustCLI(t, "escrow", "open", "--key", p("escrow.key"), "--in", p("message.env"), "--out", p("opened.txt"))
	if got := readFileT(t, p("opened.txt")); !bytes.Equal(got, message) {
		t.Fatalf("the envelope opened to %q, want %q", got, message)
	}

	// A power cut; the device boots again to the same PCRs, with its
	// ledger on the data partition and its keys in the TPM: the daemon
	// serves again and refuses the released warrant as replayed, without
	// asking for the button.
	m.PowerCut()
	boot.TPMDir = m.TPM.Dir
	m = qemutest.Boot(t, boot)
	expectMeasured(t, m, policy)
	if console, err = m.Console(bootLimit, commandLimit); err != nil {
		t.Fatal(err)
	}
	base = "https://" + m.Addr
	waitServing(t, console, base, site)
	code, stdout, stderr = releasePressing(t, base, p("w.p7s"), p("again.json"), site.officerArgs(), func() {
		t.Error("the rebooted appliance asked for the button for a released warrant")
	})
	if code == 0 || !strings.Contains(stderr, "replayed") {
		t.Fatalf("the released warrant after a reboot: exit %d\n%s%s", code, stdout, stderr)
	}
}

// sharedQEMUImage is the QEMU example's image, built once for the tests
// that boot it: building it takes longer than booting it. Each test boots
// its own copy (qemuImage), since a boot writes to the image.
var sharedQEMUImage struct {
	once   sync.Once
	built  bool
	dir    string
	root   *trusttest.CA
	policy *bootpolicy.Policy
}

// qemuFiles are the files of the built image that a boot uses.
var qemuFiles = []string{"custodian.img", "kernel8.img", "initramfs.img", "policy.json"}

// qemuImage copies the QEMU example's image, built once with its court's
// root, into dir (dir/custodian.img, kernel8.img, initramfs.img and
// policy.json), and returns its policy and the court's root.
func qemuImage(t *testing.T, k qemutest.Kernel, dir string) (*bootpolicy.Policy, *trusttest.CA) {
	t.Helper()
	img := &sharedQEMUImage
	img.once.Do(func() {
		// Beside the test binary's custodian, which TestMain removes.
		img.dir = filepath.Join(filepath.Dir(binary), "qemu-image")
		img.root = trusttest.NewRoot(t, "Test Court Root", time.Now().UTC())
		img.policy = buildQEMUImage(t, k, img.dir, trusttest.PEM(img.root.Cert))
		img.built = true
	})
	if !img.built {
		t.Fatal("the QEMU image did not build: see the first test that built it")
	}
	for _, name := range qemuFiles {
		// --sparse keeps the copy of the disk image as small as the built one.
		if out, err := exec.Command("cp", "--sparse=always", filepath.Join(img.dir, name), filepath.Join(dir, name)).CombinedOutput(); err != nil {
			t.Fatalf("copying the QEMU image's %s: %v\n%s", name, err, out)
		}
	}
	return img.policy, img.root
}

// buildQEMUImage writes the QEMU example's manifest and a root into
// dir/image, builds the image (dir/custodian.img, with copies of its
// kernel and initramfs for QEMU) and returns custodian image measure's
// policy (dir/policy.json).
func buildQEMUImage(t *testing.T, k qemutest.Kernel, dir string, courtRoot []byte) *bootpolicy.Policy {
	t.Helper()
	p := func(name string) string { return filepath.Join(dir, name) }
	started := time.Now()
	manifest := writeQEMUManifest(t, k, p("image"), courtRoot)
	t.Logf("the arm64 binary and the root filesystem in %v", time.Since(started).Round(100*time.Millisecond))
	started = time.Now()
	mustCLI(t, "image", "build", "--manifest", manifest, "--debs", k.Dir, "--target-soc", "2711",
		"--out", p("custodian.img"), "--kernel-out", p("kernel8.img"), "--initramfs-out", p("initramfs.img"))
	mustCLI(t, "image", "measure", "--manifest", manifest, "--out", p("policy.json"))
	t.Logf("the image built and measured in %v", time.Since(started).Round(100*time.Millisecond))
	return readPolicy(t, p("policy.json"))
}

// enrollOverConsole enrolls the appliance as id through its console, the
// escrow authority's challenge made on the host: dir/ID.enrollment.json
// and dir/ID.secret.
func enrollOverConsole(t *testing.T, console *qemutest.Console, dir, id string) {
	t.Helper()
	p := func(name string) string { return filepath.Join(dir, id+"."+name) }
	console.MustRun("enroll --id " + id + " --out request.json")
	writeFile(t, p("request.json"), console.MustGet("request.json"))
	mustCLI(t, "enroll", "challenge", "--in", p("request.json"), "--out", p("challenge.json"), "--secret-out", p("secret"))
	console.MustPut("challenge.json", readFileT(t, p("challenge.json")))
	console.MustRun("enroll --id " + id + " --challenge challenge.json --out enrollment.json")
	writeFile(t, p("enrollment.json"), console.MustGet("enrollment.json"))
}

// ceremonyWithHostCustodians enrolls court-b and court-c on host swtpms
// that booted the policy's image (they replay its measurements) and runs
// a 2-of-3 share-mode ceremony for key ID 2026-11 with the appliance
// (court-a) into dir/ceremony; the EK CAs of all three are dir/ek-cas.pem.
func ceremonyWithHostCustodians(t *testing.T, dir string, m *qemutest.Machine, policy *bootpolicy.Policy) []*device {
	t.Helper()
	p := func(name string) string { return filepath.Join(dir, name) }
	var roots []byte
	for _, f := range m.TPM.EKRootFiles() {
		roots = append(roots, readFileT(t, f)...)
	}
	ceremony := []string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--mode", "share",
		"--policy", p("policy.json"), "--out", p("ceremony"),
		"--enrollment", p("court-a.enrollment.json"), "--secret", "court-a=" + p("court-a.secret")}
	var hosts []*device
	for _, id := range []string{"court-b", "court-c"} {
		d, enrollment, secret := enrollWith(t, id, dir, func(conn interface{ Send([]byte) ([]byte, error) }) {
			replay(t, conn, policy)
		})
		hosts = append(hosts, d)
		ceremony = append(ceremony, "--enrollment", enrollment, "--secret", id+"="+secret)
		for _, f := range d.sw.EKRootFiles() {
			roots = append(roots, readFileT(t, f)...)
		}
	}
	writeFile(t, p("ek-cas.pem"), roots)
	mustCLI(t, append(ceremony, "--ek-roots", p("ek-cas.pem"))...)
	return hosts
}

// TestInvariantChangedRootIsNotMounted: a root partition changed after
// the image was built (one byte inside its squashfs, as a swapped or
// edited card would) does not match the pin in the signed boot image; the
// early init refuses it before the kernel parses any of its bytes, says
// so on the console, and halts without measuring or mounting anything.
func TestInvariantChangedRootIsNotMounted(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	k := qemutest.RequireKernel(t)
	tpmtest.RequireSwtpm(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	qemuImage(t, k, dir)
	qemutest.FlipByte(t, p("custodian.img"), layout.SlotA.RootPartition(), 1<<20)

	m := qemutest.Boot(t, qemutest.Config{
		Kernel: p("kernel8.img"), Initrd: p("initramfs.img"), Disk: p("custodian.img"),
		Append: "rdinit=/init custodian.boot_partition=2 quiet",
	})
	got := m.Expect(regexp.MustCompile(`^custodian-init: (FAILED: .*|mounted the root of slot .*|measured the root of slot .*)$`), bootLimit)
	if !strings.HasPrefix(got[1], "FAILED: the root of slot A") || !strings.Contains(got[1], "is not the root its boot image pins") {
		t.Fatalf("the early init went on with a changed root: %s", got[1])
	}
	m.Expect(regexp.MustCompile(`^custodian-init: halted; nothing from the root filesystem runs on this boot`), time.Minute)
}

// expectMeasured waits for the early init's lines: the root measured, and
// the PCR values it read back, which must be the policy's. A failure
// line ends the test at once.
func expectMeasured(t *testing.T, m *qemutest.Machine, policy *bootpolicy.Policy) {
	t.Helper()
	got := m.Expect(regexp.MustCompile(`^custodian-init: (FAILED: .*|measured the root of slot .*)$`), bootLimit)
	if strings.HasPrefix(got[1], "FAILED") {
		t.Fatalf("the early init failed: %s", got[1])
	}
	pcrLine := regexp.MustCompile(`^custodian-init: PCR (\d+) = ([0-9a-f]{64})$`)
	for range policy.PCRs {
		sub := m.Expect(pcrLine, time.Minute)
		var i int
		fmt.Sscan(sub[1], &i)
		want, ok := policy.PCRs[i]
		if !ok {
			t.Fatalf("the early init reports PCR %d, which the policy does not hold", i)
		}
		if sub[2] != hex.EncodeToString(want) {
			t.Errorf("PCR %d after the early init = %s, custodian image measure predicts %x", i, sub[2], want)
		}
	}
	m.Expect(regexp.MustCompile(`^custodian-init: starting the root init`), time.Minute)
}

// checkApplianceRelease checks a release package from the appliance: its
// ledger proof verifies against the verifier key ledger init printed and
// names a release of the package's key ID by the custodian.
func checkApplianceRelease(t *testing.T, path, id, verifier string) {
	t.Helper()
	r, err := escrow.ParseRelease(readFileT(t, path))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ledger == nil {
		t.Fatal("the package carries no ledger proof")
	}
	e, err := r.Ledger.Check(verifier)
	if err != nil {
		t.Fatalf("the package's ledger proof: %v", err)
	}
	if e.Kind != ledger.KindRelease || e.KeyID != r.KeyID || r.CustodianID != id {
		t.Fatalf("the proof is for %+v, the package from %s", e, r.CustodianID)
	}
}

// replay extends the PCRs along a policy's event log: a host TPM that
// booted the policy's image.
func replay(t testing.TB, conn interface{ Send([]byte) ([]byte, error) }, p *bootpolicy.Policy) {
	t.Helper()
	for _, e := range p.Events {
		if err := tpm.ExtendPCR(conn, e.PCR, e.Digest); err != nil {
			t.Fatal(err)
		}
	}
}

func readPolicy(t testing.TB, path string) *bootpolicy.Policy {
	t.Helper()
	p, err := bootpolicy.Parse(readFileT(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var ledgerKeyRE = regexp.MustCompile(`checkpoint verifier key:\n(\S[^\n]*)\n`)

// ledgerKeyFrom finds the verifier key in ledger init's output.
func ledgerKeyFrom(t testing.TB, out string) string {
	t.Helper()
	sub := ledgerKeyRE.FindStringSubmatch(out)
	if sub == nil {
		t.Fatalf("ledger init printed no verifier key:\n%s", out)
	}
	return sub[1]
}

func readFileT(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// qemuConfig is the appliance configuration on QEMU's user network.
const qemuConfig = `[network]
interface = "eth0"
address = "10.0.2.15/24"
gateway = "10.0.2.2"

[serve]
listen = "0.0.0.0:8443"
button = "sim"
display = "/dev/null"

[console]
device = "/dev/ttyAMA0"
`

// writeQEMUManifest writes the example's manifest for QEMU's virt board
// (docs/examples/appliance/qemu.toml), tpm_tis.ko from .ci/kernel beside
// it, and a root filesystem for the emulated board into dir, and returns
// the manifest's path. The root holds the arm64 custodian binary, a
// configuration for QEMU's user network with the simulated button, the
// court's root, and the mount points the early init moves its mounts to.
func writeQEMUManifest(t *testing.T, k qemutest.Kernel, dir string, courtRoot []byte) string {
	t.Helper()
	manifest := filepath.Join(dir, "manifest.toml")
	writeFile(t, manifest, readFileT(t, filepath.Join("..", "docs", "examples", "appliance", "qemu.toml")))
	writeFile(t, filepath.Join(dir, "qemu", "tpm_tis.ko"), readFileT(t, k.TPMTis))
	binary := qemutest.BuildArm64(t, "github.com/custodian-project/custodian/cmd/custodian", "")
	rootfs := filepath.Join(dir, "rootfs")
	writeFile(t, filepath.Join(rootfs, "usr/bin/custodian"), readFileT(t, binary))
	if err := os.Chmod(filepath.Join(rootfs, "usr/bin/custodian"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(rootfs, "etc/custodian/config.toml"), []byte(qemuConfig))
	writeFile(t, filepath.Join(rootfs, "etc/custodian/trust/court.pem"), courtRoot)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "var/lib/custodian"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return manifest
}

// waitServing waits until the daemon behind base answers its health
// check; if it does not, the console's status (what the device lacks,
// the init's and the daemon's last lines) goes into the failure.
func waitServing(t *testing.T, console *qemutest.Console, base string, s *site) {
	t.Helper()
	c := s.httpClient(false)
	deadline := time.Now().Add(bootLimit)
	for time.Now().Before(deadline) {
		resp, err := c.Get(base + "/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(time.Second)
	}
	status, _, err := console.Run("status")
	t.Fatalf("the appliance's daemon does not answer at %s after %v; status:\n%s%v", base, bootLimit, status, err)
}
