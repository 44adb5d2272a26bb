package firmware

import (
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

// The command line mounts the squashfs root read-only, on one line as the
// firmware wants it.
func TestCmdlineTxt(t *testing.T) {
	line := strings.TrimSuffix(string(CmdlineTxt), "\n")
	if strings.Contains(line, "\n") {
		t.Fatal("cmdline.txt must be one line")
	}
	for _, want := range []string{"root=/dev/mmcblk0p2", "rootfstype=squashfs", " ro "} {
		if !strings.Contains(" "+line+" ", want) {
			t.Errorf("cmdline.txt lacks %q", want)
		}
	}
}
