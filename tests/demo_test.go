package tests

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestDemoTellsTheWholeStory runs custodian demo, the README's run
// command: three custodians on swtpm, a 2-of-3 ceremony, a signed warrant,
// two releases after visible presses, a refused replay, recovery, and the
// envelope opened to the original bytes, with every file kept, and leaves
// no swtpm running. How long it takes is logged, not judged here.
func TestDemoTellsTheWholeStory(t *testing.T) {
	tpmtest.RequireSwtpm(t)
	keep := filepath.Join(t.TempDir(), "demo")
	start := time.Now()
	code, out, errOut := cli(t, "demo", "--keep", keep)
	elapsed := time.Since(start)
	if code != 0 {
		t.Fatalf("custodian demo: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("custodian demo took %s", elapsed.Round(time.Second))
	for _, want := range []string{
		"operator:          booted court-a on its own swtpm",
		"operator:          predicted the image's policy",
		"escrow authority:  verified court-c's enrollment: EK certified: yes, AK answered the challenge: yes",
		"escrow authority:  ran the scoped ceremony for key ID",
		"custodian court-b: provisioned its share",
		"agency:            made its recipient key pair",
		"with its proof that it drew the envelope's key (message.env)",
		"court trust admin: made the court root CA",
		"judge:             signed warrant",
		"software key; SoftHSM2/PIV in production",
		"court:             made the court officers' CA and the officer's client certificate",
		"custodian court-a: serving TLS 1.3 on https://127.0.0.1:",
		"court officer:     presses the button on court-a",
		"court officer:     presses the button on court-b",
		"custodian court-a: logged release entry",
		"custodian court-a: refused the same warrant submitted again: replayed (logged as ledger entry",
		"custodian court-a: refused a submission without a court officer's certificate: client_cert_required",
		"agency:            checked 2 partial decryptions against their TPM proofs and opened the envelope for alice@example.org",
		"agency:            the same releases do not open other.env",
		"auditor:           fetched court-a's signed checkpoint over TLS without a client certificate, verified it",
		"auditor:           read the 3 custodians' ledgers as tiles, each entry proven under its signed checkpoint, and wrote the transparency report",
		"demo:              the opened message equals the original",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if role, _, ok := strings.Cut(line, ":"); !ok || role == "" {
			t.Errorf("a line names no role: %q", line)
		}
	}
	checkKept(t, keep)
	checkDemoReport(t, keep, strings.Count(out, "logged release entry"))
	if pids := processesUsing(keep); len(pids) > 0 {
		t.Errorf("processes still running from the demo's directory: %v", pids)
	}
}

// checkKept checks --keep holds what the README promises to inspect, and
// that the opened message is the sealed one.
func checkKept(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"policy.json", "court-a.enrollment.json", "ceremony/court-c.bundle.json",
		"warrant.p7s", "judge.pem", "agency.key", "court-a.release.json", "court-b.release.json",
		"court-a/data/ledger.db", "court-a/display.txt", "court-a.checkpoint", "tls/server-ca.pem", "tls/officer.pem"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("--keep lacks %s: %v", name, err)
		}
	}
	sent, err1 := os.ReadFile(filepath.Join(dir, "message.txt"))
	opened, err2 := os.ReadFile(filepath.Join(dir, "opened.txt"))
	if err1 != nil || err2 != nil || len(sent) == 0 || !bytes.Equal(sent, opened) {
		t.Errorf("opened %q, sent %q (%v, %v)", opened, sent, err1, err2)
	}
	display, _ := os.ReadFile(filepath.Join(dir, "court-a", "display.txt"))
	if !bytes.Contains(display, []byte("Judge Ada Lovelace")) {
		t.Errorf("court-a's display did not show the warrant summary:\n%s", display)
	}
}

// processesUsing lists processes whose command line names dir (the demo's
// swtpm processes do, through their state directory).
func processesUsing(dir string) []string {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, f := range cmdlines {
		data, err := os.ReadFile(f)
		if err == nil && bytes.Contains(data, []byte(dir)) {
			pids = append(pids, filepath.Base(filepath.Dir(f)))
		}
	}
	return pids
}

// TestDemoWithoutSwtpmSaysHowToGetIt: on a machine without swtpm the demo
// fails at once with the command that installs it.
func TestDemoWithoutSwtpmSaysHowToGetIt(t *testing.T) {
	cmd := exec.Command(binary, "demo")
	cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil || !strings.Contains(stderr.String(), "swtpm is not installed") ||
		!strings.Contains(stderr.String(), "hint: make test installs swtpm") {
		t.Fatalf("exit %v\n%s", err, stderr.String())
	}
}

// checkDemoReport: the demo's transparency report reads all three ledgers
// and counts the releases the story logged.
func checkDemoReport(t *testing.T, keep string, releases int) {
	t.Helper()
	var r struct {
		Logs   []struct{ Origin string }
		Months []struct{ Releases int }
	}
	data, err := os.ReadFile(filepath.Join(keep, "report", "report.json"))
	if err != nil || json.Unmarshal(data, &r) != nil {
		t.Fatalf("the demo's report.json: %v", err)
	}
	got := 0
	for _, m := range r.Months {
		got += m.Releases
	}
	if len(r.Logs) != 3 || got != releases || releases == 0 {
		t.Errorf("the demo's report: %d ledgers and %d releases, want 3 ledgers and the %d releases the demo logged", len(r.Logs), got, releases)
	}
	if _, err := os.Stat(filepath.Join(keep, "report", "index.html")); err != nil {
		t.Errorf("the demo's report page: %v", err)
	}
}
