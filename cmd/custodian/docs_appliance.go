//go:build appliance

package main

import "github.com/spf13/cobra"

// The appliance build (-tags appliance) leaves the documentation generator
// and its Markdown and YAML libraries out of the binary that runs on the
// device.
func newDocsCommand(*globals) *cobra.Command {
	return notInAppliance("docs", "Not in the appliance build: generate the man pages on a workstation", true,
		"this appliance binary has no documentation generator",
		"run custodian docs on a workstation, with a binary built without -tags appliance")
}
