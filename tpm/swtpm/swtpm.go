// Package swtpm runs swtpm processes: software TPMs with their own state,
// their own EK certificate authority, and their data and control ports on
// 127.0.0.1. Tests (package tpmtest) and the demo use it; the appliance,
// which has a real TPM, does not.
package swtpm

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/custodian-project/custodian/hsm/certfile"
)

// ErrNotInstalled is returned when the swtpm programs are missing.
var ErrNotInstalled = errors.New("swtpm is not installed")

// Process is one running swtpm.
type Process struct {
	Dir      string // state, configuration and the local EK CA
	DataPort int
	CtrlPort int
	// CtrlSocket is the control channel's unix socket of a TPM started by
	// StartForVM (empty otherwise).
	CtrlSocket string
	cmd        *exec.Cmd
}

// Installed reports whether swtpm, swtpm_setup and swtpm_ioctl are on the
// PATH, naming the first missing one.
func Installed() error {
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_ioctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w: %s not found", ErrNotInstalled, bin)
		}
	}
	return nil
}

// Start manufactures a new TPM in dir (RSA and ECC EKs with certificates in
// NV, signed by a CA made in dir) and starts it. The caller stops it.
func Start(dir string) (*Process, error) {
	if err := Installed(); err != nil {
		return nil, err
	}
	p := &Process{Dir: dir}
	if err := p.manufacture(); err != nil {
		return nil, err
	}
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

// StartForVM manufactures a new TPM in dir like Start and serves it to a
// virtual machine: QEMU's tpm emulator backend connects to CtrlSocket, a
// unix socket through which it hands swtpm the data channel and powers the
// TPM on and off with the machine. The guest's kernel sends
// TPM2_Startup. swtpm ends when QEMU shuts it down; the caller stops it
// otherwise.
func StartForVM(dir string) (*Process, error) {
	if err := Installed(); err != nil {
		return nil, err
	}
	p := &Process{Dir: dir}
	if err := p.manufacture(); err != nil {
		return nil, err
	}
	if err := p.startForVM(); err != nil {
		return nil, err
	}
	return p, nil
}

// RestartForVM serves the TPM that StartForVM made in dir to a new
// virtual machine: a reboot, with its EK, NV and persistent objects kept.
func RestartForVM(dir string) (*Process, error) {
	if err := Installed(); err != nil {
		return nil, err
	}
	p := &Process{Dir: dir}
	if err := p.startForVM(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Process) startForVM() error {
	p.CtrlSocket = filepath.Join(p.Dir, "ctrl.sock")
	_ = os.Remove(p.CtrlSocket)
	p.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+filepath.Join(p.Dir, "state"),
		"--ctrl", "type=unixio,path="+p.CtrlSocket,
		"--log", "file="+filepath.Join(p.Dir, "swtpm.log"))
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("starting swtpm: %w", err)
	}
	if !waitFor(func() bool { _, err := os.Stat(p.CtrlSocket); return err == nil }) {
		p.Stop()
		return errors.New("swtpm did not create its control socket")
	}
	return nil
}

// manufacture runs swtpm_setup with configuration files in p.Dir, so it
// never touches the machine's default CA folder.
func (p *Process) manufacture() error {
	for _, d := range []string{"state", "ca", "cfg"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, d), 0o700); err != nil {
			return err
		}
	}
	cfg := filepath.Join(p.Dir, "cfg")
	ca := filepath.Join(p.Dir, "ca")
	files := map[string]string{
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			filepath.Join(cfg, "swtpm-localca.conf"), filepath.Join(cfg, "swtpm-localca.options")),
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")),
		"swtpm-localca.options": "--platform-manufacturer custodian-test\n--platform-version 1\n--platform-model swtpm\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(cfg, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", filepath.Join(p.Dir, "state"),
		"--create-ek-cert", "--config", filepath.Join(cfg, "swtpm_setup.conf")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("swtpm_setup: %w\n%s", err, out)
	}
	return nil
}

// start launches swtpm on a free port pair, retrying when another process
// took the ports between the probe and the start.
func (p *Process) start() error {
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			return err
		}
		// tpm2-tools' swtpm TCTI expects the control port right after the
		// data port.
		p.DataPort, p.CtrlPort = port, port+1
		p.cmd = exec.Command("swtpm", "socket", "--tpm2",
			"--tpmstate", "dir="+filepath.Join(p.Dir, "state"),
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(p.DataPort),
			"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(p.CtrlPort),
			"--flags", "startup-clear",
			"--log", "file="+filepath.Join(p.Dir, "swtpm.log"))
		if err := p.cmd.Start(); err != nil {
			return fmt.Errorf("starting swtpm: %w", err)
		}
		if waitListening(p.DataPort) {
			return nil
		}
		p.Stop()
	}
	return errors.New("swtpm did not start listening")
}

// Stop kills the process and waits for it. It may be called more than once.
func (p *Process) Stop() {
	if p.cmd != nil && p.cmd.Process != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

// Spec is the --tpm value that reaches this swtpm.
func (p *Process) Spec() string { return fmt.Sprintf("swtpm:127.0.0.1:%d", p.DataPort) }

// TCTI is the tpm2-tools TCTI string for this swtpm.
func (p *Process) TCTI() string { return fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", p.DataPort) }

// EKRootFiles are the PEM files of the CA that signed this swtpm's EK
// certificates (its local root and issuing CA).
func (p *Process) EKRootFiles() []string {
	return []string{filepath.Join(p.Dir, "ca", "swtpm-localca-rootca-cert.pem"), filepath.Join(p.Dir, "ca", "issuercert.pem")}
}

// EKRoots returns a pool with the certificates of EKRootFiles.
func (p *Process) EKRoots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, name := range p.EKRootFiles() {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		certs, err := certfile.Certificates(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	return pool, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago; a
// caller that loses it to another process retries.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(port int) bool {
	return waitFor(func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// waitFor polls ready for up to five seconds.
func waitFor(ready func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ready() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
