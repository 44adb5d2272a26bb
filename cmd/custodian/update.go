package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/firmware/update"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
)

// Where the running kernel reports the boot and the block devices.
const (
	procDir = "/proc"
	sysDir  = "/sys"
)

func newUpdateApplyCommand(g *globals) *cobra.Command {
	var imagePath, diskPath string
	var noReboot bool
	cmd := &cobra.Command{
		Use:   "apply --image NEW.update [--disk /dev/mmcblk0] [--no-reboot]",
		Short: "Write a new image into the inactive slot and reboot into it once (tryboot)",
		Long: `On the device, as root: apply reads slot A of the update file image build
--update-out wrote (gzip, decompressed in memory), or of a whole built
image (boot.img, boot.sig, which must carry a signature, the root),
predicts its policy as image measure --image does, and
refuses unless every share and the checkpoint key in the data directory
will open under it: already sealed to it, or resealed to it by
reseal --update with the escrow authority's approval. Then it writes the
image's boot and root partitions into the slot that is not running, reads
them back and compares their SHA-256, and reboots with tryboot: the
firmware boots the new slot once. There, run reseal --finish and then
update commit; if the new slot does not come up, the next boot is the
running slot again.

Apply touches only the inactive slot: never the running slot, the
autoboot partition or the data partition. It refuses during a tryboot.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			boot, err := update.RunningSlot(procDir)
			if err != nil {
				return err
			}
			if !boot.Pi && !noReboot {
				return withHint(errors.New("this board is not a Raspberry Pi (its firmware reports no boot partition), so nothing can reboot it into the new slot with tryboot"),
					"pass --no-reboot to write the inactive slot only")
			}
			if boot.Tryboot {
				return withHint(fmt.Errorf("%w (slot %s runs on trial)", update.ErrTryboot, boot.Slot),
					"run custodian reseal --finish and custodian update commit first, or reboot to go back to the previous slot")
			}
			im, closeImage, err := openImageFile(imagePath)
			if err != nil {
				return err
			}
			defer closeImage()
			dev, size, err := g.openDisk(diskPath)
			if err != nil {
				return err
			}
			defer dev.Close()
			w, err := update.Apply(dev, size, boot, im, g.approveImage)
			if err != nil {
				return err
			}
			g.printf("wrote slot %s (boot.img and root of %s, security version %d): boot sha256 %x, root sha256 %x\n",
				w.Slot, imagePath, w.Policy.SecurityVersion, w.Boot, w.Root)
			if noReboot {
				g.printf("not rebooting (--no-reboot); slot %s is still the default\n", boot.Slot)
				return nil
			}
			g.printf("rebooting into slot %s once (tryboot); there run: custodian reseal --finish, then custodian update commit\n", w.Slot)
			return update.RebootTryboot()
		},
	}
	f := cmd.Flags()
	f.StringVar(&imagePath, "image", "", "the update file (image build --update-out) or the whole image")
	f.StringVar(&diskPath, "disk", "", "the appliance disk (default: the disk of the data directory's partition)")
	f.BoolVar(&noReboot, "no-reboot", false, "write the inactive slot and stop (no tryboot reboot)")
	_ = cmd.MarkFlagRequired("image")
	return cmd
}

// approveImage accepts an image whose policy the data directory's sealed
// files will open under.
func (g *globals) approveImage(p *bootpolicy.Policy) error {
	n, err := appliance.ReadyFor(g.dataDir, p.PCRs, p.SecurityVersion)
	if err != nil {
		return withHint(err,
			"the escrow authority approves the new image: custodian image measure --image NEW.img --out new-policy.json, then custodian update sign --policy new-policy.json",
			"on this device, running the current image: custodian reseal --update update.note, then custodian update apply again")
	}
	if n == 0 {
		g.printf("nothing is sealed on this device yet (no ledger, no share): any approved image will do\n")
	}
	return nil
}

func newUpdateCommitCommand(g *globals) *cobra.Command {
	var diskPath string
	cmd := &cobra.Command{
		Use:   "commit [--disk /dev/mmcblk0]",
		Short: "Make the slot running on trial (tryboot) the one the device boots",
		Long: `On the device, as root, in the tryboot update apply started, after
reseal --finish promoted every resealed file: commit rewrites autoboot.txt
on the autoboot partition so that the firmware boots the running slot from
now on, and reads it back. The previous slot is retired: it no longer
boots, and the shares no longer open under it. Commit refuses outside a
tryboot and while reseal --finish has files left to promote.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			boot, err := update.RunningSlot(procDir)
			if err != nil {
				return err
			}
			pending, err := appliance.Pending(g.dataDir)
			if err != nil {
				return err
			}
			dev, size, err := g.openDisk(diskPath)
			if err != nil {
				return err
			}
			defer dev.Close()
			if err := update.Commit(dev, size, boot, pending); err != nil {
				if len(pending) > 0 {
					return withHint(err, "run custodian reseal --finish first; if it refuses, reboot: the device goes back to the previous slot")
				}
				return err
			}
			g.printf("slot %s is the default now (autoboot.txt boots partition %d); slot %s is retired\n",
				boot.Slot, boot.Slot.BootPartition(), boot.Slot.Other())
			return nil
		},
	}
	cmd.Flags().StringVar(&diskPath, "disk", "", "the appliance disk (default: the disk of the data directory's partition)")
	return cmd
}

// openDisk opens the appliance disk for writing: path, or the disk whose
// data partition holds the data directory.
func (g *globals) openDisk(path string) (*os.File, int64, error) {
	if path == "" {
		var err error
		if path, err = update.DiskOf(sysDir, g.dataDir); err != nil {
			return nil, 0, err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, withHint(err, "update runs as root on the device, on the appliance disk (--disk)")
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, size, nil
}

// openImageFile opens a built image file, or an update file
// (gzip-compressed, decompressed into memory).
func openImageFile(path string) (*update.Image, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not an image file", path)
	}
	head := make([]byte, 2)
	if _, err := f.ReadAt(head, 0); err == nil && update.IsCompressed(head) {
		defer f.Close()
		data, err := update.ReadUpdate(f)
		if err != nil {
			return nil, nil, withHint(err, "give the update file custodian image build --update-out wrote")
		}
		im, err := update.OpenImage(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil, nil, withHint(err, "give the update file custodian image build --update-out wrote")
		}
		return im, func() {}, nil
	}
	im, err := update.OpenImage(f, info.Size())
	if err != nil {
		f.Close()
		return nil, nil, withHint(err, "give the update file (or the image) custodian image build wrote for this device")
	}
	return im, func() { f.Close() }, nil
}
