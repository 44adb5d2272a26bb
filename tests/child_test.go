package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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
	CrashAt string `json:"crash_at"` // a release.Config.Hook stage, or ""
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
		Hook: func(stage, _ string) {
			if stage == cfg.CrashAt {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("custodian %s serving on http://%s\n", a.ID, ln.Addr())
	api := &release.API{Daemon: d}
	err = http.Serve(ln, api.Handler())
	fmt.Fprintln(os.Stderr, err)
	return 1
}
