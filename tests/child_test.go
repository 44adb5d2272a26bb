package tests

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

// childEnv makes the test binary run a daemon in-process instead of the
// tests, so a test can kill it with SIGKILL at a chosen point of a release.
const childEnv = "CUSTODIAN_TEST_CHILD"

type childConfig struct {
	TPM     string `json:"tpm"`
	Data    string `json:"data"`
	CrashAt string `json:"crash_at"` // a release.Config.Hook stage, or stage@keyID, or ""
	// The site's files (tlstest.PKI): the child serves TLS as serve does.
	ServerCert string `json:"server_cert"`
	ServerKey  string `json:"server_key"`
	OfficerCA  string `json:"officer_ca"`
}

// runChildDaemon is custodian serve --button sim, wired the same way, with a
// hook that kills the process at the chosen stage.
func runChildDaemon() int {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	conn, err := tpm.Open(cfg.TPM)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// As custodian serve does: what the killed daemon left loaded on
	// swtpm (no resource manager) is flushed before anything else.
	if _, err := tpm.FlushStale(conn); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	t := release.Serialize(conn)
	a, err := appliance.Open(cfg.Data, t)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	btn, err := button.ListenSim(filepath.Join(cfg.Data, button.SimSocket))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	d, err := release.New(release.Config{Appliance: a, TPM: t, Button: btn, Display: os.Stderr, Window: 10 * time.Second,
		Hook: func(stage, keyID string) {
			if stage == cfg.CrashAt || stage+"@"+keyID == cfg.CrashAt {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pair, err := tls.LoadX509KeyPair(cfg.ServerCert, cfg.ServerKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pem, err := os.ReadFile(cfg.OfficerCA)
	officers := x509.NewCertPool()
	if err != nil || !officers.AppendCertsFromPEM(pem) {
		fmt.Fprintln(os.Stderr, "officers' CA:", err)
		return 2
	}
	tlsCfg := release.ServerTLS(pair, officers)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("custodian %s serving on https://%s\n", a.ID, ln.Addr())
	api := &release.API{Daemon: d, Officers: officers}
	err = api.Server(tlsCfg).Serve(ln)
	fmt.Fprintln(os.Stderr, err)
	return 1
}
