package main

import (
	"os"

	"github.com/custodian-project/custodian/firmware/earlyinit"
)

// initRole is what the binary does when the kernel starts it as PID 1:
// from the initramfs as /init, the measuring early init. Neither returns.
// Any other start runs the command line.
func initRole() func() {
	if os.Getpid() != 1 {
		return nil
	}
	if os.Args[0] == "/init" {
		return earlyinit.Main
	}
	return nil
}
