package main

import (
	"fmt"
	"os"
	"slices"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/firmware/console"
	"github.com/custodian-project/custodian/firmware/earlyinit"
	"github.com/custodian-project/custodian/firmware/rootinit"
)

// initRole is what the binary does when it is the appliance's init rather
// than a command: started by the kernel as PID 1 from the initramfs as
// /init, the measuring early init; as PID 1 in the root, the root init;
// started by the root init as custodian-sandbox, the step that drops to
// the daemon's user before it executes a command. The first two never
// return. Any other start runs the command line.
func initRole() func() {
	switch {
	case os.Getpid() == 1 && os.Args[0] == "/init":
		return earlyinit.Main
	case os.Getpid() == 1:
		return func() { rootinit.Main(rootinit.Options{Commands: consoleCommands()}) }
	case os.Args[0] == rootinit.SandboxName:
		return func() {
			err := rootinit.Sandbox(os.Args[1:])
			fmt.Fprintf(os.Stderr, "custodian: error: %v\n", err)
			os.Exit(126)
		}
	}
	return nil
}

// consoleCommands are the subcommands the operator's console runs; button
// press only where the build has the simulated button.
func consoleCommands() []string {
	cmds := slices.Clone(console.DefaultCommands)
	if button.Simulated {
		cmds = append(cmds, "button")
	}
	return cmds
}
