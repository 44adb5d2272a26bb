package main

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/image"
)

func newMeasureBootCommand(g *globals) *cobra.Command {
	var manifest, root, runDir string
	cmd := &cobra.Command{
		Use:   "measure-boot --manifest M --root DIR",
		Short: "Measure the root filesystem into the TPM (early init, once per boot)",
		Long: `Measure-boot is the root of the device's measurements. The initramfs runs it
before anything reads the root filesystem: it measures the root filesystem's
content digest, the custodian binary, the configuration and the court trust
roots into PCRs 8-15 (not 10), in the order firmware/measure documents, then
extends a separator. The event log goes to RUN-DIR/boot.cel.

It refuses to run twice in one boot: RUN-DIR/measured exists, or a PCR it
would extend is not zero. The manifest is the one inside the signed boot.img.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := loadManifest(manifest)
			if err != nil {
				return err
			}
			t, err := g.openTPM()
			if err != nil {
				return err
			}
			defer t.Close()
			events, err := measure.Boot(t, m.Spec(), os.DirFS(root), runDir)
			if errors.Is(err, measure.ErrAlreadyMeasured) {
				return withHint(err, "the measurements are complete until the next reboot; reboot to measure again")
			}
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"events": events, "log": filepath.Join(runDir, measure.LogFile)})
			}
			for _, e := range events {
				g.printf("PCR %2d  %-11s %s\n", e.PCR, e.Kind, e.Name)
			}
			g.printf("event log: %s\n", filepath.Join(runDir, measure.LogFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&manifest, "manifest", "/boot/"+image.ManifestName, "the image manifest (the copy inside boot.img)")
	f.StringVar(&root, "root", "", "the mounted root filesystem to measure")
	f.StringVar(&runDir, "run-dir", "/run/custodian", "where the event log and the once-per-boot marker go (a tmpfs)")
	_ = cmd.MarkFlagRequired("root")
	return cmd
}
