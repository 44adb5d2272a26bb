//go:build !appliance

package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image/builder"
)

func newImageBuildCommand(g *globals) *cobra.Command {
	var manifest, out, keyFile, soc string
	cmd := &cobra.Command{
		Use:   "build --manifest M --out IMG [--key boot-key.pem]",
		Short: "Assemble the SD-card image a manifest describes",
		Long: `Build writes an MBR disk image: a FAT16 boot partition with boot.img (kernel,
initramfs, device trees, config.txt, cmdline.txt, the manifest) and its
boot.sig, and a read-only squashfs root filesystem. The same manifest and
inputs give the same bytes.

--key signs boot.img for Pi secure boot (RSA-2048 PEM); without it boot.sig
carries only the digest and a board with SIGNED_BOOT=1 refuses to boot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := loadManifest(manifest)
			if err != nil {
				return err
			}
			opt := builder.Options{TargetSoC: soc, Progress: g.progress()}
			if keyFile != "" {
				if opt.Key, err = loadBootKey(keyFile); err != nil {
					return err
				}
			}
			start := time.Now()
			if err := builder.Build(m, out, opt); err != nil {
				return withHint(err, "--out must be a regular file or a new path")
			}
			if keyFile == "" {
				fmt.Fprintln(g.stderr, "custodian: warning: boot.img is unsigned; sign it (image build --key) before writing a secure-boot card")
			}
			info, err := os.Stat(out)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"image": out, "bytes": info.Size(), "signed": keyFile != ""})
			}
			g.printf("wrote %s (%d bytes) in %.1fs\n", out, info.Size(), time.Since(start).Seconds())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&manifest, "manifest", "", "image manifest (TOML)")
	f.StringVar(&out, "out", "", "image file to write")
	bootKeyFlags(f, &keyFile, &soc)
	_ = cmd.MarkFlagRequired("manifest")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// progress draws a one-line progress bar when stderr is a terminal and
// stays quiet otherwise, so logs and pipes get only the result.
func (g *globals) progress() func(string, int, int) {
	f, ok := g.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(step string, n, total int) {
		const width = 20
		done := width * n / total
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if i < done {
				bar[i] = '#'
			}
		}
		fmt.Fprintf(f, "\r\033[K[%s] %d/%d %s", bar, n, total, step)
		if n == total {
			fmt.Fprintln(f)
		}
	}
}

// predictImage reads the policy out of a built image.
func predictImage(file string) (*bootpolicy.Policy, error) { return builder.PredictImage(file) }
