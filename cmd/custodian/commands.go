package main

import "github.com/spf13/cobra"

// registerCommands adds every subcommand to root. Each command lives in its
// own file and is built by a constructor taking the shared globals.
func registerCommands(root *cobra.Command, g *globals) {
	root.AddCommand(newDocsCommand(g)) // docs.go: man pages and completions
	root.AddCommand(
		newEnrollCommand(g),
		newLedgerCommand(g),
		newPolicyCommand(g),
		newCeremonyCommand(g),
		newProvisionCommand(g),
		newRecoverCommand(g),
		newEscrowCommand(g),
		newAttestCommand(g),
		newUpdateCommand(g),
		newResealCommand(g),
		newFloorCommand(g),
		newAgencyCommand(g),
		newTrustCommand(g),
		newWarrantCommand(g),
		newImageCommand(g),
		newMeasureBootCommand(g),
		newServeCommand(g),
		newButtonCommand(g),
		newReleaseCommand(g),
		newMonitorCommand(g),
		newReportCommand(g),
		newDemoCommand(g),
	)
}
