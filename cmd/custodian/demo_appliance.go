//go:build appliance

package main

import "github.com/spf13/cobra"

// The appliance build (-tags appliance) leaves the demo out: it starts
// swtpm processes and presses simulated buttons, which the device must not.
func newDemoCommand(*globals) *cobra.Command {
	return notInAppliance("demo", "Not in the appliance build: run the demo on a workstation", true,
		"this appliance binary has no demo",
		"run custodian demo on a workstation, with a binary built without -tags appliance")
}
