// Package imagetest writes small image inputs (a manifest, a root
// filesystem tree, boot files) for tests of the image builder, the
// prediction and measure-boot.
package imagetest

import (
	"os"
	"path/filepath"
	"testing"
)

// Manifest is the test manifest; its paths are relative to its directory.
const Manifest = `version = 1
source_date_epoch = 1767225600
security_version = 1

[boot]
files = [
  { src = "boot/kernel8.img", dst = "kernel8.img" },
  { src = "boot/bcm2711-rpi-4-b.dtb", dst = "bcm2711-rpi-4-b.dtb" },
  { src = "boot/tpm-slb9670.dtbo", dst = "overlays/tpm-slb9670.dtbo" },
]

[rootfs]
dir = "rootfs"

[initramfs]
modules = ["boot/tpm_tis_core.ko", "boot/tpm_tis.ko"]
`

// Files are the inputs besides the manifest, by path below the manifest's
// directory, with their modes.
var Files = map[string]struct {
	Data string
	Mode os.FileMode
}{
	"boot/kernel8.img":                       {"not a kernel\n", 0o644},
	"boot/bcm2711-rpi-4-b.dtb":               {"not a device tree\n", 0o644},
	"boot/tpm-slb9670.dtbo":                  {"not an overlay\n", 0o644},
	"boot/tpm_tis_core.ko":                   {"not a module\n", 0o644},
	"boot/tpm_tis.ko":                        {"not a module either\n", 0o644},
	"rootfs/usr/bin/custodian":               {"#!/bin/sh\necho custodian\n", 0o700},
	"rootfs/etc/custodian/config.toml":       {"listen = \":8443\"\n", 0o600},
	"rootfs/etc/custodian/trust/court-a.pem": {"court A root\n", 0o644},
	"rootfs/etc/custodian/trust/court-b.pem": {"court B root\n", 0o644},
	"rootfs/etc/hostname":                    {"custodian\n", 0o664},
}

// Write puts the inputs into a new temporary directory and returns the
// manifest's path.
func Write(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for name, f := range Files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.Data), f.Mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.Mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("custodian", filepath.Join(dir, "rootfs/usr/bin/custodiand")); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, "manifest.toml")
	if err := os.WriteFile(manifest, []byte(Manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return manifest
}
