//go:build appliance

package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
)

// The appliance build (-tags appliance) leaves the image builder and its
// disk libraries out of the binary that runs on the device.
func newImageBuildCommand(*globals) *cobra.Command {
	return notInAppliance("build", "Not in the appliance build: build images on the build host", false,
		"this appliance binary has no image builder",
		"run custodian image build on the build host, with a binary built without -tags appliance")
}

// predictManifest predicts a manifest without rootfs.files; one with them
// needs the builder's source reader.
func predictManifest(m *image.Manifest, _ string) (*bootpolicy.Policy, error) {
	p, err := m.Predict()
	if errors.Is(err, image.ErrRootFiles) {
		return nil, withHint(err, "run custodian image measure on the build host, with a binary built without -tags appliance")
	}
	return p, err
}

func predictImage(string) (*bootpolicy.Policy, error) {
	return nil, withHint(errors.New("this appliance binary cannot read images"),
		"run custodian image measure --image on the build host, or use --manifest")
}
