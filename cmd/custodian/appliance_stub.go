//go:build appliance

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// notInAppliance is the stand-in for a command the appliance build
// (-tags appliance) leaves out: it keeps the name, so a mistaken call gets
// a hint instead of "unknown command", and runs nothing.
func notInAppliance(use, short string, hidden bool, msg, hint string) *cobra.Command {
	return &cobra.Command{
		Use:    use,
		Short:  short,
		Hidden: hidden,
		RunE: func(*cobra.Command, []string) error {
			return withHint(errors.New(msg), hint)
		},
	}
}
