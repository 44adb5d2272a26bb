// Package tpmtest runs tests against real TPMs: swtpm processes started per
// test on 127.0.0.1, the in-process simulator, and a hardware TPM named by
// the -tpm-device flag. It also records TPM traffic so tests can search
// every command and response for secrets.
package tpmtest

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
)

// Swtpm is one swtpm process serving a test, with its own state, its own
// EK certificate authority, and its data and control ports on 127.0.0.1.
type Swtpm struct {
	Dir      string // state, configuration and the local EK CA
	DataPort int
	CtrlPort int
	cmd      *exec.Cmd
}

// RequireSwtpm skips the test when swtpm is not installed.
func RequireSwtpm(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_ioctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (make test installs it from Debian's swtpm and swtpm-tools)", bin)
		}
	}
}

// StartSwtpm manufactures a new TPM (RSA and ECC EKs with certificates in
// NV, signed by a CA made in the test's directory) and starts it. It is
// stopped when the test ends.
func StartSwtpm(t testing.TB) *Swtpm {
	t.Helper()
	RequireSwtpm(t)
	s := &Swtpm{Dir: t.TempDir()}
	s.manufacture(t)
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

// manufacture runs swtpm_setup with configuration files in s.Dir, so it
// never touches the machine's default CA folder.
func (s *Swtpm) manufacture(t testing.TB) {
	t.Helper()
	for _, d := range []string{"state", "ca", "cfg"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(s.Dir, "cfg")
	ca := filepath.Join(s.Dir, "ca")
	files := map[string]string{
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			filepath.Join(cfg, "swtpm-localca.conf"), filepath.Join(cfg, "swtpm-localca.options")),
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")),
		"swtpm-localca.options": "--platform-manufacturer custodian-test\n--platform-version 1\n--platform-model swtpm\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(cfg, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", filepath.Join(s.Dir, "state"),
		"--create-ek-cert", "--config", filepath.Join(cfg, "swtpm_setup.conf")).CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
}

func (s *Swtpm) start(t testing.TB) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		// tpm2-tools' swtpm TCTI expects the control port right after the
		// data port.
		s.DataPort = freePort(t)
		s.CtrlPort = s.DataPort + 1
		s.cmd = exec.Command("swtpm", "socket", "--tpm2",
			"--tpmstate", "dir="+filepath.Join(s.Dir, "state"),
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(s.DataPort),
			"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(s.CtrlPort),
			"--flags", "startup-clear",
			"--log", "file="+filepath.Join(s.Dir, "swtpm.log"))
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("starting swtpm: %v", err)
		}
		if waitListening(s.DataPort) {
			return
		}
		s.stop()
	}
	t.Fatal("swtpm did not start listening")
}

func (s *Swtpm) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// Spec is the --tpm value that reaches this swtpm.
func (s *Swtpm) Spec() string { return fmt.Sprintf("swtpm:127.0.0.1:%d", s.DataPort) }

// Open connects to the swtpm's data port; the connection closes with the test.
func (s *Swtpm) Open(t testing.TB) transport.TPMCloser {
	t.Helper()
	conn, err := tpm.Open(s.Spec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// PowerCycle simulates a reboot: an orderly TPM2_Shutdown(CLEAR) on conn,
// a re-initialisation through swtpm's control port (swtpm_ioctl -i), and
// TPM2_Startup(CLEAR). PCRs return to zero; persistent objects and NV stay.
func (s *Swtpm) PowerCycle(t testing.TB, conn transport.TPM) {
	t.Helper()
	if _, err := (tpm2.Shutdown{ShutdownType: tpm2.TPMSUClear}).Execute(conn); err != nil {
		t.Fatalf("TPM2_Shutdown: %v", err)
	}
	out, err := exec.Command("swtpm_ioctl", "--tcp", "127.0.0.1:"+strconv.Itoa(s.CtrlPort), "-i").CombinedOutput()
	if err != nil {
		t.Fatalf("swtpm_ioctl -i: %v\n%s", err, out)
	}
	if _, err := (tpm2.Startup{StartupType: tpm2.TPMSUClear}).Execute(conn); err != nil {
		t.Fatalf("TPM2_Startup: %v", err)
	}
}

// TCTI is the tpm2-tools TCTI string for this swtpm.
func (s *Swtpm) TCTI() string { return fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.DataPort) }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(port int) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// EKRoots returns a pool with the CA certificates that signed this swtpm's
// EK certificates (its local root and issuing CA).
func (s *Swtpm) EKRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, name := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, "ca", name))
		if err != nil {
			t.Fatal(err)
		}
		if !pool.AppendCertsFromPEM(data) {
			t.Fatalf("no certificate in %s", name)
		}
	}
	return pool
}
