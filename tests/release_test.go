package tests

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/smartcard/softhsmtest"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// daemon is a running custodian serve.
type daemon struct {
	cmd    *exec.Cmd
	client *client // the court officer's
	site   *site   // nil with --insecure-http
	out    *syncBuffer
	errOut *syncBuffer
}

var servingRE = regexp.MustCompile(`serving on (https?://\S+)`)

// startDaemon runs custodian serve for d with the simulated button, over
// TLS with its own site's certificates and officers' CA, unless extra
// says --insecure-http.
func startDaemon(t testing.TB, d *device, extra ...string) *daemon {
	t.Helper()
	var s *site
	if !slices.Contains(extra, "--insecure-http") {
		s = newSite(t)
		extra = append(s.serveArgs(), extra...)
	}
	if !slices.Contains(extra, "--event-log") {
		// Never the machine's own /run/custodian/boot.cel: a test without
		// a boot event log has none, whatever ran on this machine before.
		extra = append(extra, "--event-log", filepath.Join(t.TempDir(), "no-boot.cel"))
	}
	args := d.args(append([]string{"serve", "--listen", "127.0.0.1:0", "--button", "sim", "--window", "30s"}, extra...)...)
	cmd := exec.Command(binary, args...)
	out, errOut := &syncBuffer{}, &syncBuffer{}
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(out, pw)
	cmd.Stderr = errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dm := &daemon{cmd: cmd, site: s, out: out, errOut: errOut}
	t.Cleanup(func() { dm.stop() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case a := <-addr:
		dm.client = &client{base: a, http: &http.Client{Timeout: 30 * time.Second}}
		if s != nil {
			dm.client.http = s.httpClient(true)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not start:\n%s%s", out, errOut)
	}
	return dm
}

// stop ends the daemon with SIGTERM and waits.
func (dm *daemon) stop() {
	if dm.cmd.ProcessState != nil {
		return
	}
	dm.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { dm.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		dm.cmd.Process.Kill()
		<-done
	}
}

// officerArgs are the client flags of a court officer of dm's site, or
// --insecure-http for a plain daemon.
func (dm *daemon) officerArgs() []string {
	if dm.site == nil {
		return []string{"--insecure-http"}
	}
	return dm.site.officerArgs()
}

// auditorArgs are the client flags of anyone else.
func (dm *daemon) auditorArgs() []string {
	if dm.site == nil {
		return []string{"--insecure-http"}
	}
	return dm.site.auditorArgs()
}

// release runs custodian release against dm as its court officer.
func (dm *daemon) release(t *testing.T, p7s, out string) (int, string, string) {
	t.Helper()
	return cli(t, append([]string{"release", "--server", dm.client.base, "--warrant", p7s, "--out", out}, dm.officerArgs()...)...)
}

// releaseWithPress runs custodian release against a daemon as its court
// officer (extra replaces the officer's client flags when given) and
// presses the simulated button once the client says to.
func releaseWithPress(t *testing.T, d *device, dm *daemon, p7s, out string, extra ...string) (int, string, string) {
	t.Helper()
	if len(extra) == 0 {
		extra = dm.officerArgs()
	}
	return releasePressing(t, dm.client.base, p7s, out, extra, func() {
		mustCLI(t, "--data-dir", d.data, "button", "press")
	})
}

// releasePressing runs custodian release against server with the client
// flags given and calls press once the client tells the officer to press
// the button.
func releasePressing(t *testing.T, server, p7s, out string, flags []string, press func()) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"release", "--server", server, "--warrant", p7s, "--out", out}, flags...)...)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	pressed := false
	for {
		select {
		case <-done:
			return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
		case <-time.After(50 * time.Millisecond):
		}
		if !pressed && strings.Contains(stdout.String(), "press the button on the custodian") {
			press()
			pressed = true
		}
	}
}

// TestEndToEndTwoOfThreeOverTLSWithOfficerCertificates: three appliances,
// each on its own swtpm; a 2-of-3 ceremony; a warrant signed on a SoftHSM2
// token; releases from two daemons over TLS 1.3, each requiring a court
// officer's client certificate, with simulated presses; recovery; an
// envelope sealed before opens to the same bytes. The same warrant is then
// refused as replayed, also after a daemon restart; an auditor reads and
// checks a ledger without a client certificate.
func TestEndToEndTwoOfThreeOverTLSWithOfficerCertificates(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	now := time.Now().UTC()

	devices, ceremony := enrolledFleet(t, dir)
	mustCLI(t, append([]string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--mode", "share", "--out", p("ceremony")}, ceremony...)...)
	for _, d := range devices {
		mustCLI(t, d.args("provision", "--bundle", p("ceremony/"+d.id+".bundle.json"))...)
	}
	escrowFile := p("ceremony/escrow-2026-11.pub.json")
	secretMessage := []byte("the intercepted conversation")
	os.WriteFile(p("message.txt"), secretMessage, 0o600)
	mustCLI(t, "escrow", "seal", "--escrow", escrowFile, "--target", "alice@example.org", "--in", p("message.txt"), "--out", p("message.env"))

	sign := courtFor(t, dir, devices, now)
	mustCLI(t, "agency", "keygen", "--out", p("agency.key"), "--pub", p("agency.pub"))
	mustCLI(t, "warrant", "new", "--serial", "W-2026-0042", "--docket", "CR-1/2026", "--court", "Test Court",
		"--agency", "Test Police", "--official", "Inspector Morse", "--offence", "fraud",
		"--target", "alice@example.org", "--key-id", "2026-11",
		"--custodian", "court-a", "--custodian", "court-b", "--custodian", "court-c", "--recipient", p("agency.pub"),
		"--not-before", now.Add(-time.Hour).Format(time.RFC3339), "--not-after", now.Add(48*time.Hour).Format(time.RFC3339),
		"--out", p("w.json"))
	sign(p("w.json"), p("w.p7s"))

	var releases []string
	daemons := map[string]*daemon{}
	for _, d := range devices[1:] {
		dm := startDaemon(t, d)
		if !strings.HasPrefix(dm.client.base, "https://") {
			t.Fatalf("%s serves %s", d.id, dm.client.base)
		}
		daemons[d.id] = dm
		out := p(d.id + ".release.json")
		code, stdout, stderr := releaseWithPress(t, d, dm, p("w.p7s"), out)
		if code != 0 {
			t.Fatalf("release from %s: exit %d\n%s%s\ndaemon:\n%s%s", d.id, code, stdout, stderr, dm.out, dm.errOut)
		}
		for _, want := range []string{"Judge Ada", "W-2026-0042", "alice@example.org", "waiting for the button", "released key ID 2026-11"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("release output lacks %q:\n%s", want, stdout)
			}
		}
		if !strings.Contains(dm.out.String(), "WARRANT AWAITING APPROVAL") || !strings.Contains(dm.out.String(), "Judge Ada") {
			t.Errorf("the device display did not show the summary:\n%s", dm.out)
		}
		checkPackage(t, d, out)
		releases = append(releases, "--release", out)
	}

	mustCLI(t, append([]string{"recover", "--identity", p("agency.key"), "--escrow", escrowFile, "--out", p("escrow.key")}, releases...)...)
	mustCLI(t, "escrow", "open", "--key", p("escrow.key"), "--in", p("message.env"), "--out", p("opened.txt"))
	if got, _ := os.ReadFile(p("opened.txt")); !bytes.Equal(got, secretMessage) {
		t.Fatalf("opened %q", got)
	}

	// Replayed: refused with its code, logged, and again after a restart.
	b := devices[1]
	code, _, stderr := daemons[b.id].release(t, p("w.p7s"), p("again.json"))
	if code == 0 || !strings.Contains(stderr, "replayed") || !strings.Contains(stderr, "hint: ") {
		t.Fatalf("replay: exit %d %s", code, stderr)
	}
	daemons[b.id].stop()
	dm := startDaemon(t, b)
	code, _, stderr = dm.release(t, p("w.p7s"), p("again.json"))
	if code == 0 || !strings.Contains(stderr, "replayed") || !regexp.MustCompile(`ledger entry \d+`).MatchString(stderr) {
		t.Fatalf("replay after restart: exit %d %s", code, stderr)
	}
	if _, err := os.Stat(p("again.json")); err == nil {
		t.Fatal("a replayed warrant produced a package")
	}

	// An auditor reads court-c's ledger over TLS without a client
	// certificate, checked against the pinned verifier key.
	cc := devices[2]
	remote := append([]string{"--server", daemons[cc.id].client.base, "--verifier-key", filepath.Join(cc.data, "ledger-key.pub")}, daemons[cc.id].auditorArgs()...)
	cp := mustCLI(t, append([]string{"ledger", "checkpoint"}, remote...)...)
	os.WriteFile(p("cp-c.txt"), []byte(cp), 0o644)
	if !strings.HasPrefix(cp, "custodian/court-c\n") {
		t.Fatalf("checkpoint: %q", cp)
	}
	proof := mustCLI(t, append([]string{"ledger", "prove", "--index", "1"}, remote...)...)
	if !strings.Contains(proof, `"checkpoint"`) {
		t.Fatalf("prove: %s", proof)
	}
	out := mustCLI(t, append([]string{"ledger", "verify", "--old", p("cp-c.txt")}, remote...)...)
	if !strings.Contains(out, "extends the old checkpoint") {
		t.Fatalf("verify: %s", out)
	}
	// Another appliance's key does not verify court-c's ledger; no key is no check.
	wrong := append([]string{"--server", daemons[cc.id].client.base, "--verifier-key", filepath.Join(b.data, "ledger-key.pub")}, daemons[cc.id].auditorArgs()...)
	if code, _, stderr := cli(t, append([]string{"ledger", "checkpoint"}, wrong...)...); code == 0 || !strings.Contains(stderr, "not signed by the pinned verifier key") {
		t.Fatalf("wrong key: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, append([]string{"ledger", "checkpoint", "--server", daemons[cc.id].client.base}, daemons[cc.id].auditorArgs()...)...); code == 0 || !strings.Contains(stderr, "--verifier-key") {
		t.Fatalf("no key: %d %s", code, stderr)
	}
}

// enrolledFleet enrolls three appliances, each on its own swtpm, writes
// their EK vendor roots to ek-cas.pem and a policy.json from court-a's
// enrollment, and returns the devices with the enrollment arguments of a
// ceremony.
func enrolledFleet(t *testing.T, dir string) ([]*device, []string) {
	t.Helper()
	p := func(name string) string { return filepath.Join(dir, name) }
	var devices []*device
	var ceremony []string
	var roots []byte
	for _, id := range []string{"court-a", "court-b", "court-c"} {
		d, enrollment, secret := enroll(t, id, dir)
		devices = append(devices, d)
		ceremony = append(ceremony, "--enrollment", enrollment, "--secret", id+"="+secret)
		for _, name := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
			pem, err := os.ReadFile(filepath.Join(d.sw.Dir, "ca", name))
			if err != nil {
				t.Fatal(err)
			}
			roots = append(roots, pem...)
		}
	}
	os.WriteFile(p("ek-cas.pem"), roots, 0o644)
	mustCLI(t, "policy", "from-enrollment", "--in", p("court-a.enrollment.json"), "--secret", p("court-a.secret"),
		"--ek-roots", p("ek-cas.pem"), "--security-version", "1", "--out", p("policy.json"))
	return devices, append(ceremony, "--policy", p("policy.json"), "--ek-roots", p("ek-cas.pem"))
}

// courtFor makes a court whose judge signs on a SoftHSM2 token, has every
// device trust its root and CRL, and returns the judge's signing step.
func courtFor(t *testing.T, dir string, devices []*device, now time.Time) (sign func(in, out string)) {
	t.Helper()
	p := func(name string) string { return filepath.Join(dir, name) }
	tok := softhsmtest.New(t, "judge")
	root := trusttest.NewRoot(t, "Test Court Root", now)
	judge := root.Judge(t, "Judge Ada", tok.GenerateKey(t, "EC:prime256v1", "judge-key", "01", false), now)
	os.WriteFile(p("root.pem"), trusttest.PEM(root.Cert), 0o644)
	os.WriteFile(p("crl.pem"), trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))), 0o644)
	os.WriteFile(p("judge.pem"), trusttest.PEM(judge), 0o644)
	for _, d := range devices {
		mustCLI(t, d.args("trust", "add-root", p("root.pem"), "--court", "Test Court")...)
		mustCLI(t, d.args("trust", "set-crl", p("crl.pem"))...)
	}
	t.Setenv("CUSTODIAN_PIN", tok.PIN)
	return func(in, out string) {
		t.Helper()
		mustCLI(t, "warrant", "sign", "--in", in, "--module", softhsmtest.Module,
			"--key", "pkcs11:token=judge;object=judge-key", "--cert", p("judge.pem"), "--out", out)
	}
}

// checkPackage checks a saved package: its ledger proof verifies against the
// appliance's verifier key and names a release entry for the key ID.
func checkPackage(t *testing.T, d *device, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := os.ReadFile(filepath.Join(d.data, "ledger-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ledger == nil {
		t.Fatal("the package carries no ledger proof")
	}
	e, err := r.Ledger.Check(strings.TrimSpace(string(verifier)))
	if err != nil {
		t.Fatalf("ledger proof: %v", err)
	}
	if e.Kind != ledger.KindRelease || e.KeyID != r.KeyID || r.CustodianID != d.id {
		t.Fatalf("the proof is for %+v", e)
	}
}
