// Package earlyinit is the appliance's first process: the custodian binary
// started by the kernel as PID 1 from the signed initramfs, as /init. It
// brings up just enough of the system to measure the root filesystem, and
// measures it before any file from it executes:
//
//  1. mount devtmpfs on /dev, proc, sysfs and a tmpfs on /run
//  2. read the image manifest /custodian.toml (the measurement layout)
//  3. load the kernel modules /modules/order names (the TPM's, loop,
//     squashfs)
//  4. set the system clock from the RTC, and stop if it is implausible
//  5. wait (at most 30 s) for the TPM at /dev/tpmrm0
//  6. find the booted slot (firmware, or custodian.boot_partition=N)
//  7. find the slot's root partition by GPT name, copy the root into
//     sealed memory, check it against the pin /root.sha256 (its size and
//     SHA-256, written by the image builder into this signed initramfs),
//     and mount that checked copy read-only at /sysroot through a loop
//     device: the squashfs driver parses no byte that was not checked
//  8. measure it (package measure: root tree, binary, configuration,
//     trust roots, separator) into PCRs 8-15, event log in /run/custodian
//  9. mount the data partition (ext4, nodev, nosuid, noexec) at
//     /sysroot/var/lib/custodian
//  10. move /dev, /proc, /sys and /run into /sysroot, make it the root,
//     and execute /usr/bin/custodian as the root init
//
// Each stage prints a line starting "custodian-init: " on the console. A
// failure prints what failed and what to check, and halts: PID 1 never
// exits (the kernel would panic) and never reboots. A reboot would loop
// over the same fault, scroll the message away, and hide from the operator
// that the device did not come up; a halted device keeps the message on
// its console, and a power cycle retries (after an update tried with
// tryboot, a power cycle boots the previous slot again).
//
// There is no shell and no rescue mode: nothing the early init could offer
// on a failure would be measured.
package earlyinit

import (
	"fmt"
	"io"
	"strings"
)

// Prefix starts every line the early init prints.
const Prefix = "custodian-init: "

// Failure is a stage that failed: what failed, the error, and what the
// operator should check.
type Failure struct {
	What  string
	Err   error
	Check string
}

func (f *Failure) Error() string { return f.What + ": " + f.Err.Error() }

func (f *Failure) Unwrap() error { return f.Err }

func fail(what string, err error, check string) *Failure {
	return &Failure{What: what, Err: err, Check: check}
}

// PrintFailure writes an early init failure for the person at the console.
func PrintFailure(w io.Writer, err error) {
	Report(w, err, "nothing from the root filesystem runs on this boot")
}

// Report writes a failure: what failed, what to check, and what the halt
// means (consequence).
func Report(w io.Writer, err error, consequence string) {
	fmt.Fprintf(w, "%sFAILED: %v\n", Prefix, err)
	if f, ok := err.(*Failure); ok && f.Check != "" {
		fmt.Fprintf(w, "%scheck: %s\n", Prefix, f.Check)
	}
	fmt.Fprintf(w, "%shalted; %s. Power-cycle the device to try again.\n", Prefix, consequence)
}

// Fail makes a Failure: what failed, the error, what to check.
func Fail(what string, err error, check string) *Failure { return fail(what, err, check) }

// console prints stage lines.
type console struct{ w io.Writer }

func (c console) printf(format string, args ...any) {
	fmt.Fprintf(c.w, Prefix+strings.TrimSuffix(format, "\n")+"\n", args...)
}
