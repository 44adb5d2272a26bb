package config

import (
	"strings"
	"testing"
)

// serve.display is any path under /dev. The root init gives that node to
// the daemon's group (chown root:64000, mode 0660) in the real /dev and
// binds it into every sandboxed command's /dev: a display of /dev/mmcblk0
// hands the daemon and every console command the raw SD card, /dev/tpm0
// the TPM without its resource manager, /dev/mem the memory. And the
// console and display are compared as strings only: /dev/console (the
// kernel console, ttyAMA0 with console=ttyAMA0) passes beside
// console.device /dev/ttyAMA0, and the warrant summaries go into the
// operator's session, which the check exists to prevent.
func TestBreakConfigDisplayMayNameAnyDevice(t *testing.T) {
	for _, display := range []string{"/dev/mmcblk0", "/dev/tpm0", "/dev/mem", "/dev/console"} {
		text := strings.Replace(valid, `display = "/dev/tty1"`, `display = "`+display+`"`, 1)
		if _, err := Parse([]byte(text)); err == nil {
			t.Errorf("serve.display %s accepted", display)
		}
	}
}
