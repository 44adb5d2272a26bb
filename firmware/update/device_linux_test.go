package update

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The disk of a partition comes from sysfs's link to it.
func TestDiskOfDevice(t *testing.T) {
	sys := t.TempDir()
	part := filepath.Join(sys, "devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p6")
	if err := os.MkdirAll(part, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(part, "partition"), []byte("6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sys, "dev/block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0/mmcblk0p6", filepath.Join(sys, "dev/block/179:6")); err != nil {
		t.Fatal(err)
	}
	disk, n, err := diskOfDevice(sys, 179, 6)
	if err != nil || disk != "/dev/mmcblk0" || n != 6 {
		t.Fatalf("got %q, %d, %v", disk, n, err)
	}
	if _, _, err := diskOfDevice(sys, 179, 0); err == nil || !strings.Contains(err.Error(), "--disk") {
		t.Fatalf("a device without a partition number: %v", err)
	}
}
