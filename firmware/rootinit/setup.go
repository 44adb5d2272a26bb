package rootinit

import (
	"os"
	"path/filepath"

	"github.com/custodian-project/custodian/firmware/config"
	"github.com/custodian-project/custodian/hsm/appliance"
)

// The daemon's user: every custodian command the root init starts runs as
// this fixed, otherwise unused uid and gid, except update.
const (
	DaemonUID = 64000
	DaemonGID = 64000
)

// Fixed paths of the running appliance.
const (
	Binary    = "/usr/bin/custodian"
	DataDir   = "/var/lib/custodian"
	TPMDevice = "/dev/tpmrm0"
)

// TLS files of the daemon, relative to the data directory.
const (
	TLSCert     = "tls/server.pem"
	TLSKey      = "tls/server.key"
	TLSClientCA = "tls/officer-ca.pem"
)

// setupFiles must exist before the daemon starts: the enrollment, the
// ledger (custodian ledger init) and the TLS files. Without them the
// daemon would only exit, again and again.
var setupFiles = []string{"enrollment.json", appliance.LedgerKeyBlob, TLSCert, TLSKey, TLSClientCA}

// Missing lists the set-up files dataDir lacks (relative names).
func Missing(dataDir string) []string {
	var missing []string
	for _, f := range setupFiles {
		fi, err := os.Stat(filepath.Join(dataDir, f))
		if err != nil || !fi.Mode().IsRegular() {
			missing = append(missing, f)
		}
	}
	return missing
}

// ServeArgs is the daemon's command line (after the program name).
func ServeArgs(c *config.Config, dataDir, tpm string) []string {
	args := []string{"--data-dir", dataDir, "--tpm", tpm, "serve",
		"--listen", c.Serve.Listen, "--button", c.Serve.Button, "--display", c.Serve.Display,
		"--tls-cert", filepath.Join(dataDir, TLSCert),
		"--tls-key", filepath.Join(dataDir, TLSKey),
		"--client-ca", filepath.Join(dataDir, TLSClientCA),
	}
	if c.Serve.LED != "" {
		args = append(args, "--led", c.Serve.LED)
	}
	return args
}
