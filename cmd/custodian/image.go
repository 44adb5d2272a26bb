package main

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/bootsig"
)

func newImageCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build the SD-card image, sign its boot.img, predict its PCRs",
		Long: `The operator's image tools, run on a build host. The manifest format is in
docs/image.md, policy.json in docs/policy.md.`,
	}
	cmd.AddCommand(newImageBuildCommand(g), newImageMeasureCommand(g), newImageSignCommand(g))
	return cmd
}

func loadManifest(file string) (*image.Manifest, error) {
	if data, err := os.ReadFile(file); err == nil {
		if kind := notText(data); kind != "" {
			return nil, withHint(fmt.Errorf("--manifest %s is not an image manifest (TOML): %s", file, kind),
				"the manifest is the TOML file docs/image.md describes (such as image/manifest.example.toml)")
		}
	}
	m, err := image.LoadManifest(file)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, explainOS(fmt.Errorf("--manifest: %w", err)) // not there, or not readable: the keys are not the matter
	}
	if err != nil {
		return nil, withHint(err, "see docs/image.md for the manifest's keys")
	}
	return m, nil
}

// loadBootKey reads an RSA private key in PEM (PKCS#1, as rpi-eeprom's
// examples make with "openssl genrsa", or PKCS#8).
func loadBootKey(file string) (crypto.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, withHint(fmt.Errorf("%s: no PEM block", file), "make a key with: openssl genrsa -out boot-key.pem 2048")
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		err = fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, withHint(fmt.Errorf("%s: %w", file, err), "--key is the RSA-2048 private key (PEM) that signs boot.img; make one with: openssl genrsa -out boot-key.pem 2048")
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok || rsaKey.N.BitLen() != 2048 {
		return nil, withHint(fmt.Errorf("%s: not an RSA-2048 key; the Pi's bootloader verifies nothing else", file),
			"make a key with: openssl genrsa -out boot-key.pem 2048")
	}
	return rsaKey, nil
}

func newImageMeasureCommand(g *globals) *cobra.Command {
	var manifest, img, out, debDir string
	cmd := &cobra.Command{
		Use:   "measure (--manifest M | --image IMG) --out policy.json",
		Short: "Predict the PCR values and event log the image produces at boot",
		Long: `Measure runs the boot measurement sequence (the one measure-boot runs on the
device) and writes the policy: PCR values after the separator and the
expected event log (docs/policy.md). The ceremony seals shares to it.

With --manifest it measures the manifest's root filesystem as the builder
puts it into the image; with --image it reads a built image instead (the
manifest inside its boot.img and its squashfs root), so anyone holding the
image can check the policy. A manifest that adds rootfs.files reads their
sources, from --debs as image build does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := predict(manifest, img, debDir)
			if err != nil {
				return err
			}
			data, err := p.Marshal()
			if err != nil {
				return err
			}
			if err := writeOutput(out, data); err != nil {
				return err
			}
			if g.json {
				_, err := g.stdout.Write(data)
				return err
			}
			g.printf("wrote %s\n", out)
			printPCRs(g.stdout, p)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&manifest, "manifest", "", "image manifest (TOML)")
	f.StringVar(&img, "image", "", "a built image to measure instead of a manifest")
	f.StringVar(&out, "out", "", "policy file to write")
	f.StringVar(&debDir, "debs", "", "directory to read the manifest's debs from, by file name (for rootfs.files)")
	cmd.MarkFlagsOneRequired("manifest", "image")
	cmd.MarkFlagsMutuallyExclusive("manifest", "image")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func predict(manifest, img, debDir string) (*bootpolicy.Policy, error) {
	if img != "" {
		return predictImage(img)
	}
	m, err := loadManifest(manifest)
	if err != nil {
		return nil, err
	}
	return predictManifest(m, debDir)
}

func printPCRs(w io.Writer, p *bootpolicy.Policy) {
	for _, i := range p.PCRs.Indices() {
		fmt.Fprintf(w, "PCR %2d  %x\n", i, p.PCRs[i])
	}
}

func newImageSignCommand(g *globals) *cobra.Command {
	var in, out, keyFile, soc string
	var ts int64
	cmd := &cobra.Command{
		Use:   "sign --in boot.img --key boot-key.pem --out boot.sig",
		Short: "Write boot.sig for a boot.img, as rpi-eeprom-digest does",
		Long: `Sign writes the boot.sig the Pi's EEPROM checks with SIGNED_BOOT=1: the
SHA-256 of boot.img, a timestamp, and an RSASSA-PKCS1-v1_5 SHA-256
signature by an RSA-2048 key (format: image/bootsig, after rpi-eeprom's
rpi-eeprom-digest). The timestamp is --ts, else SOURCE_DATE_EPOCH, else now.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := loadBootKey(keyFile)
			if err != nil {
				return err
			}
			img, err := os.ReadFile(in)
			if err != nil {
				return err
			}
			if ts == 0 {
				if ts, err = sourceDateEpoch(); err != nil {
					return err
				}
			}
			sig, err := bootsig.Sign(img, ts, soc, key)
			if err != nil {
				return err
			}
			if err := writeOutput(out, sig.Marshal()); err != nil {
				return err
			}
			g.printf("wrote %s for %s (sha256 %x)\n", out, in, sig.Digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "boot.img to sign")
	f.StringVar(&out, "out", "", "boot.sig to write")
	bootKeyFlags(f, &keyFile, &soc)
	f.Int64Var(&ts, "ts", 0, "timestamp to write (Unix seconds)")
	for _, name := range []string{"in", "out", "key"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// bootKeyFlags are the flags of the commands that sign boot.img.
func bootKeyFlags(f *pflag.FlagSet, keyFile, soc *string) {
	f.StringVar(keyFile, "key", "", "RSA-2048 private key (PEM) that signs boot.img for secure boot")
	f.StringVar(soc, "target-soc", "", "write target-soc into boot.sig: 2711 (Pi 4) or 2712 (Pi 5)")
}

// writeOutput replaces the file --out names, durably, and refuses
// anything there that is not a regular file.
func writeOutput(out string, data []byte) error {
	return withHint(durable.WriteFile(out, data, 0o644), "--out must be a regular file or a new path")
}

func sourceDateEpoch() (int64, error) {
	s, ok := os.LookupEnv("SOURCE_DATE_EPOCH")
	if !ok {
		return time.Now().Unix(), nil
	}
	var ts int64
	if _, err := fmt.Sscan(s, &ts); err != nil || ts < 0 {
		return 0, errors.New("SOURCE_DATE_EPOCH must be a Unix time in seconds")
	}
	return ts, nil
}
