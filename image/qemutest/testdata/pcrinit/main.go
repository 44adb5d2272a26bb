// Command pcrinit is the /init of the kernel check's initramfs: it loads
// the TPM modules listed in /modules/order, extends PCR 8 through
// /dev/tpmrm0 with the SHA-256 digest of the event given as
// pcrinit.event=TEXT on the kernel command line, reads the PCR back and
// prints it, then powers the machine off. Every outcome is one marker line
// on the console; the test judges by those, since QEMU exits 0 either way.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Printf("pcrinit: failed: %v\n", err)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mounting /dev: %w", err)
	}
	if err := os.MkdirAll("/proc", 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	event, err := eventFromCmdline()
	if err != nil {
		return err
	}
	if err := loadModules("/modules"); err != nil {
		return err
	}
	dev, err := waitForDevice("/dev/tpmrm0", 10*time.Second)
	if err != nil {
		return err
	}
	tpm, err := linuxtpm.Open(dev)
	if err != nil {
		return err
	}
	defer tpm.Close()
	digest := sha256.Sum256([]byte(event))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(8), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:]},
		}},
	}).Execute(tpm); err != nil {
		return fmt.Errorf("extending PCR 8: %w", err)
	}
	read, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(8)},
	}}}.Execute(tpm)
	if err != nil {
		return fmt.Errorf("reading PCR 8: %w", err)
	}
	if len(read.PCRValues.Digests) != 1 {
		return fmt.Errorf("PCR read returned %d values", len(read.PCRValues.Digests))
	}
	fmt.Printf("pcrinit: pcr 8 sha256 %s\n", hex.EncodeToString(read.PCRValues.Digests[0].Buffer))
	return nil
}

func eventFromCmdline() (string, error) {
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", err
	}
	for _, field := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(field, "pcrinit.event="); ok {
			return v, nil
		}
	}
	return "", errors.New("no pcrinit.event= on the kernel command line")
}

// loadModules loads each module named in dir/order, in that order.
func loadModules(dir string) error {
	f, err := os.Open(filepath.Join(dir, "order"))
	if err != nil {
		return err
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		name := strings.TrimSpace(lines.Text())
		if name == "" {
			continue
		}
		if err := loadModule(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("loading %s: %w", name, err)
		}
		fmt.Printf("pcrinit: loaded %s\n", name)
	}
	return lines.Err()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") {
		flags = unix.MODULE_INIT_COMPRESSED_FILE
	}
	return unix.FinitModule(int(f.Fd()), "", flags)
}

func waitForDevice(path string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not appear within %v", path, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
