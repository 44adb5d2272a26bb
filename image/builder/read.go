package builder

import (
	"fmt"
	"io"
	"os"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/layout"
)

// PredictImage computes the boot policy from a built image rather than
// from its inputs, with the function update apply runs on the device
// (imagefs.Predict): the manifest inside slot A's boot.img and root A's
// squashfs as written, with the modes it holds. An auditor with only the
// image gets the same policy as the operator's `image measure --manifest`.
func PredictImage(file string) (*bootpolicy.Policy, error) {
	d, err := diskfs.Open(file, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	boot, err := d.GetPartition(layout.SlotA.BootPartition())
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	fsys, err := imagefs.OpenFAT(d.Backend, boot.GetStart(), boot.GetSize())
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	bootImg, err := imagefs.ReadFile(fsys, BootImgName, imagefs.MaxBootImg)
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	root, err := d.GetPartition(layout.SlotA.RootPartition())
	if err != nil {
		return nil, fmt.Errorf("root partition: %w", err)
	}
	return imagefs.Predict(bootImg, io.NewSectionReader(d.Backend, root.GetStart(), root.GetSize()), root.GetSize())
}

// PredictManifest is [image.Manifest.Predict] for every manifest: one
// that adds rootfs.files is predicted over the root tree the build makes,
// with the files read from their sources (debDir as for [Build]).
func PredictManifest(m *image.Manifest, debDir string) (*bootpolicy.Policy, error) {
	if len(m.RootFS.Files) == 0 {
		return m.Predict()
	}
	sources, err := readSources(m, debDir, m.RootSources())
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "custodian-measure-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	dir, err := rootTree(m, sources, work)
	if err != nil {
		return nil, err
	}
	return m.Spec().Predict(os.DirFS(dir), image.NormalMode)
}
