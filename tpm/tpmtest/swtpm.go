// Package tpmtest runs tests against real TPMs: swtpm processes started per
// test on 127.0.0.1, the in-process simulator, and a hardware TPM named by
// the -tpm-device flag. It also records TPM traffic so tests can search
// every command and response for secrets.
package tpmtest

import (
	"crypto/x509"
	"os/exec"
	"strconv"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tests/need"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/swtpm"
)

// Swtpm is one swtpm process serving a test, with its own state, its own
// EK certificate authority, and its data and control ports on 127.0.0.1.
type Swtpm struct {
	*swtpm.Process
}

// RequireSwtpm skips the test when swtpm is not installed.
func RequireSwtpm(t testing.TB) {
	t.Helper()
	if err := swtpm.Installed(); err != nil {
		need.Missing(t, "%v (make test installs it from Debian's swtpm and swtpm-tools)", err)
	}
}

// StartSwtpm manufactures a new TPM (RSA and ECC EKs with certificates in
// NV, signed by a CA made in the test's directory) and starts it. It is
// stopped when the test ends.
func StartSwtpm(t testing.TB) *Swtpm {
	t.Helper()
	RequireSwtpm(t)
	p, err := swtpm.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &Swtpm{Process: p}
}

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
	s.reboot(t, conn, tpm2.TPMSUClear)
}

// Restart is a reboot after TPM2_Shutdown(STATE) (TPM Restart, as after a
// hibernation whose resume failed): PCRs return to zero, but the saved
// context of a transient object that is not stClear still loads.
func (s *Swtpm) Restart(t testing.TB, conn transport.TPM) {
	t.Helper()
	s.reboot(t, conn, tpm2.TPMSUState)
}

func (s *Swtpm) reboot(t testing.TB, conn transport.TPM, shutdown tpm2.TPMSU) {
	t.Helper()
	if _, err := (tpm2.Shutdown{ShutdownType: shutdown}).Execute(conn); err != nil {
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

// EKRoots returns a pool with the CA certificates that signed this swtpm's
// EK certificates (its local root and issuing CA).
func (s *Swtpm) EKRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool, err := s.Process.EKRoots()
	if err != nil {
		t.Fatal(err)
	}
	return pool
}
