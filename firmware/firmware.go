// Package firmware holds what the Raspberry Pi reads before the custodian
// runs: the boot configuration inside the signed boot.img (config.txt,
// cmdline.txt), the outer config.txt beside it, and the EEPROM boot.conf
// that turns on secure boot. SECURE-BOOT.md describes the one-time OTP
// key step. The files are embedded so the image builder uses exactly these
// bytes unless a manifest names others.
package firmware

import _ "embed"

// ConfigTxt is config.txt inside boot.img: 64-bit kernel, SPI and the
// SLB9670 TPM overlay, I2C and the DS3231 RTC overlay.
//
//go:embed boot/config.txt
var ConfigTxt []byte

// CmdlineTxt is the kernel command line inside boot.img.
//
//go:embed boot/cmdline.txt
var CmdlineTxt []byte

// OuterConfigTxt sits beside boot.img on the boot partition. With
// SIGNED_BOOT=1 the EEPROM loads boot.img and boot.sig and ignores it; it
// only lets a board without secure boot start the same image (in ramdisk
// mode, unverified) during development.
//
//go:embed boot/outer-config.txt
var OuterConfigTxt []byte

// BootConf is the EEPROM configuration for secure boot.
//
//go:embed eeprom/boot.conf
var BootConf []byte

// ServiceUnit is the systemd unit that runs custodian serve as a dedicated
// user with only the TPM, the GPIO chip and the console, on a host with
// systemd. The appliance image has no systemd: its root init
// (firmware/rootinit) runs the daemon with the same TLS files and keeps
// the unit's protections it can (docs/appliance.md).
//
//go:embed systemd/custodian.service
var ServiceUnit []byte
