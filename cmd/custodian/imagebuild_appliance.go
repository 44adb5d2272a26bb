//go:build appliance

package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
)

// The appliance build (-tags appliance) leaves the image builder and its
// disk libraries out of the binary that runs on the device.
func newImageBuildCommand(*globals) *cobra.Command {
	return notInAppliance("build", "Not in the appliance build: build images on the build host", false,
		"this appliance binary has no image builder",
		"run custodian image build on the build host, with a binary built without -tags appliance")
}

func predictImage(string) (*bootpolicy.Policy, error) {
	return nil, withHint(errors.New("this appliance binary cannot read images"),
		"run custodian image measure --image on the build host, or use --manifest")
}
