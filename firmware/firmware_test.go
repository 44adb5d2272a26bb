package firmware

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// settings reads key=value lines of a Pi config file, skipping comments
// and section headers.
func settings(text string) map[string][]string {
	out := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		out[k] = append(out[k], v)
	}
	return out
}

// The boot configuration turns on what the appliance's hardware needs.
func TestConfigTxt(t *testing.T) {
	s := settings(string(ConfigTxt))
	for key, want := range map[string]string{
		"arm_64bit": "1", "dtparam": "spi=on", "dtoverlay": "tpm-slb9670",
	} {
		if !slices.Contains(s[key], want) {
			t.Errorf("config.txt lacks %s=%s", key, want)
		}
	}
	if !slices.Contains(s["dtoverlay"], "i2c-rtc,ds3231") || !slices.Contains(s["dtparam"], "i2c_arm=on") {
		t.Error("config.txt lacks the DS3231 RTC")
	}
}

// Secure boot is on, and the bootloader boots only from the SD card.
func TestBootConf(t *testing.T) {
	s := settings(string(BootConf))
	if !slices.Contains(s["SIGNED_BOOT"], "1") || !slices.Contains(s["BOOT_ORDER"], "0xf1") {
		t.Fatalf("boot.conf: %v", s)
	}
}

// The command line starts the early init from the initramfs, which finds
// its root partition by GPT name: no root= device path (an emulated disk
// is /dev/vda, an SD card /dev/mmcblk0). One line, as the firmware wants.
func TestCmdlineTxt(t *testing.T) {
	line := strings.TrimSuffix(string(CmdlineTxt), "\n")
	if strings.Contains(line, "\n") {
		t.Fatal("cmdline.txt must be one line")
	}
	for _, want := range []string{" rdinit=/init ", " panic=10 ", " console=serial0,115200 "} {
		if !strings.Contains(" "+line+" ", want) {
			t.Errorf("cmdline.txt lacks %q", want)
		}
	}
	if strings.Contains(line, "root=") {
		t.Errorf("cmdline.txt names a root device: %q", line)
	}
}

func TestServiceUnitIsHardened(t *testing.T) {
	unit := string(ServiceUnit)
	for _, want := range []string{
		"User=custodian", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/custodian",
		"DevicePolicy=closed", "DeviceAllow=/dev/tpmrm0 rw", "DeviceAllow=/dev/gpiochip0 rw", "CapabilityBoundingSet=\n",
		"--button gpio:GPIO17", "MemoryDenyWriteExecute=yes",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("custodian.service lacks %q", want)
		}
	}
	if strings.Contains(unit, "--button sim") {
		t.Error("the device's unit must not use the simulated button")
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		f := filepath.Join(t.TempDir(), "custodian.service")
		os.WriteFile(f, ServiceUnit, 0o644)
		out, err := exec.Command(path, "verify", "--man=no", f).CombinedOutput()
		// verify also checks that ExecStart exists, which it does not here.
		if err != nil && !strings.Contains(string(out), "/usr/bin/custodian") {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
}
