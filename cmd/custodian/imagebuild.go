//go:build !appliance

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/builder"
)

func newImageBuildCommand(g *globals) *cobra.Command {
	var manifest, out, keyFile, soc, debDir, kernelOut, initramfsOut, updateOut string
	cmd := &cobra.Command{
		Use:   "build --manifest M --out IMG [--key boot-key.pem]",
		Short: "Assemble the SD-card image a manifest describes",
		Long: `Build writes a GPT disk image (docs/image.md): the autoboot partition, slot A's
boot partition with boot.img (kernel, the initramfs it makes, device trees,
config.txt, cmdline.txt, the manifest) and its boot.sig, an empty slot B,
the gzip-compressed squashfs root of slot A, an empty root B, and an empty
ext4 data partition (made with the host's mke2fs). Inputs come from host
files or from Debian packages pinned by SHA-256. The same manifest and
inputs give the same bytes.

--key signs boot.img for Pi secure boot (RSA-2048 PEM); without it boot.sig
carries only the digest and a board with SIGNED_BOOT=1 refuses to boot.
--kernel-out and --initramfs-out write copies of the kernel and the
initramfs in boot.img, for booting them in an emulator.

--update-out also writes the update file: slot A's boot and root
partitions alone, each as small as its content, in a GPT. It is what an
installed device takes (custodian update apply --image FILE): far smaller
than the image, so it fits beside the ledger on the data partition and
crosses the serial console in a fraction of the time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := loadManifest(manifest)
			if err != nil {
				return err
			}
			opt := builder.Options{TargetSoC: soc, DebDir: debDir, KernelOut: kernelOut, InitramfsOut: initramfsOut, UpdateOut: updateOut, Progress: g.progress()}
			if keyFile != "" {
				if opt.Key, err = loadBootKey(keyFile); err != nil {
					return err
				}
			}
			start := time.Now()
			if err := builder.Build(m, out, opt); err != nil {
				return buildHint(err)
			}
			if keyFile == "" {
				fmt.Fprintln(g.stderr, "custodian: warning: boot.img is unsigned; sign it (image build --key) before writing a secure-boot card")
			}
			info, err := os.Stat(out)
			if err != nil {
				return err
			}
			if g.json {
				report := map[string]any{"image": out, "bytes": info.Size(), "signed": keyFile != ""}
				if updateOut != "" {
					upd, err := os.Stat(updateOut)
					if err != nil {
						return err
					}
					report["update"], report["update_bytes"] = updateOut, upd.Size()
				}
				return g.printJSON(report)
			}
			g.printf("wrote %s (%d bytes) in %.1fs\n", out, info.Size(), time.Since(start).Seconds())
			if updateOut != "" {
				if info, err = os.Stat(updateOut); err != nil {
					return err
				}
				g.printf("wrote %s (%d bytes), the update file for update apply\n", updateOut, info.Size())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&manifest, "manifest", "", "image manifest (TOML)")
	f.StringVar(&out, "out", "", "image file to write")
	f.StringVar(&debDir, "debs", "", "directory to read the manifest's debs from, by file name (default: their paths beside the manifest)")
	f.StringVar(&kernelOut, "kernel-out", "", "also write the kernel in boot.img to this file")
	f.StringVar(&initramfsOut, "initramfs-out", "", "also write the initramfs in boot.img to this file")
	f.StringVar(&updateOut, "update-out", "", "also write the update file (slot A's boot and root alone) that update apply takes")
	bootKeyFlags(f, &keyFile, &soc)
	_ = cmd.MarkFlagRequired("manifest")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// buildHint names the cause of a build error and what fixes it.
func buildHint(err error) error {
	var (
		out    *builder.OutputError
		digest *builder.DigestError
		size   *builder.SizeError
		file   *builder.BootFileError
	)
	var missing *fs.PathError
	switch {
	case errors.As(err, &missing) && errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(missing.Path, ".deb"):
		return withHint(err, `the packages the manifest pins are fetched, not built: --debs "$(sh docs/examples/appliance/fetch-debs.sh MANIFEST)" fetches them and names their directory`)
	case errors.As(err, &out):
		return withHint(err, "--out, --kernel-out, --initramfs-out and --update-out must be regular files or new paths")
	case errors.As(err, &digest):
		return withHint(err, "this is not the package the manifest pins: download the pinned version again (docs/examples/appliance/fetch-debs.sh), or put its new sha256 into the manifest if you mean to change it")
	case errors.As(err, &size):
		hint := fmt.Sprintf("raise %s to at least %d in the manifest", size.Key, size.Need)
		if slices.Contains([]string{"image_mib", "boot_img_mib", "boot_mib", "root_mib"}, size.Key) {
			hint += ", or leave it out to have it computed"
		}
		return withHint(err, hint)
	case errors.As(err, &file):
		return withHint(err, fmt.Sprintf("add it to the manifest's %s, e.g. { src = \"deb:kernel:/path/in/package\", dst = \"%s\" } (docs/image.md)", file.Key, strings.Fields(file.Name)[0]))
	}
	return err
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

// predictManifest predicts a manifest's policy, reading rootfs.files.
func predictManifest(m *image.Manifest, debDir string) (*bootpolicy.Policy, error) {
	p, err := builder.PredictManifest(m, debDir)
	if err != nil {
		return nil, buildHint(err)
	}
	return p, nil
}

// predictImage reads the policy out of a built image.
func predictImage(file string) (*bootpolicy.Policy, error) {
	p, err := builder.PredictImage(file)
	var pe *fs.PathError
	if err != nil && !errors.As(err, &pe) {
		// The disk library's words ("no partition table found on disk")
		// give way to what the file seems to be.
		return nil, withHint(fmt.Errorf("--image %s is not a disk image custodian image build wrote: %s", file, fileKind(file, "it has no partition table this image's layout has")),
			"--image is a disk image custodian image build wrote (custodian.img), not an update file or boot.img")
	}
	return p, err
}
