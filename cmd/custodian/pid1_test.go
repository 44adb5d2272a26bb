//go:build linux

package main

import (
	"io"
	"slices"
	"testing"

	"github.com/custodian-project/custodian/firmware/button"
)

// Every subcommand the operator's console allows is a command of this
// binary, and button is allowed exactly where the build simulates it.
func TestConsoleCommandsExist(t *testing.T) {
	root := newRootCommand(io.Discard, io.Discard)
	for _, name := range consoleCommands() {
		cmd, _, err := root.Find([]string{name})
		if err != nil || cmd == root || cmd.Name() != name {
			t.Errorf("console command %q is not a subcommand: %v", name, err)
		}
	}
	if slices.Contains(consoleCommands(), "button") != button.Simulated {
		t.Errorf("button on the console: %v, simulated button in this build: %v", slices.Contains(consoleCommands(), "button"), button.Simulated)
	}
	if initRole() != nil {
		t.Error("a test process took an init role")
	}
}
