package builder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/layout"
)

// PredictImage computes the boot policy from a built image rather than
// from its inputs: the manifest inside boot.img and the squashfs root as
// written, with the modes it holds. An auditor with only the image gets
// the same policy as the operator's `image measure --manifest`.
//
// go-diskfs does not report setuid, setgid or sticky bits; the builder
// never writes them, and an image that has them predicts a policy its
// device never reaches (a share sealed to it would not open).
func PredictImage(file string) (*bootpolicy.Policy, error) {
	d, err := diskfs.Open(file, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	m, err := manifestFromImage(d.GetFilesystem)
	if err != nil {
		return nil, err
	}
	part, err := d.GetPartition(layout.SlotA.RootPartition())
	if err != nil {
		return nil, fmt.Errorf("root partition: %w", err)
	}
	sq, err := squashfs.Read(d.Backend, part.GetSize(), part.GetStart(), squashSize)
	if err != nil {
		return nil, fmt.Errorf("root filesystem: %w", err)
	}
	return m.Spec().Predict(squashTree{sq}, nil)
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

// manifestFromImage reads custodian.toml from boot.img on slot A's boot
// partition.
func manifestFromImage(getFS func(int) (filesystem.FileSystem, error)) (*image.Manifest, error) {
	boot, err := getFS(layout.SlotA.BootPartition())
	if err != nil {
		return nil, fmt.Errorf("boot partition: %w", err)
	}
	bootImg, err := readFAT(boot, BootImgName)
	if err != nil {
		return nil, err
	}
	// go-diskfs opens disks by path only; give boot.img one.
	tmp, err := os.MkdirTemp("", "custodian-bootimg-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	innerPath := filepath.Join(tmp, BootImgName)
	if err := os.WriteFile(innerPath, bootImg, 0o600); err != nil {
		return nil, err
	}
	inner, err := diskfs.Open(innerPath, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, err
	}
	defer inner.Close()
	innerFS, err := inner.GetFilesystem(0)
	if err != nil {
		return nil, fmt.Errorf("boot.img: %w", err)
	}
	raw, err := readFAT(innerFS, image.ManifestName)
	if err != nil {
		return nil, err
	}
	return image.ParseManifest(raw, "")
}

// readFAT reads a file from a go-diskfs FAT file system, whose ReadFile
// returns whole clusters: the directory entry has the length.
func readFAT(fsys filesystem.FileSystem, name string) ([]byte, error) {
	info, err := fsys.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	data, err := fsys.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(data)) < info.Size() {
		return nil, fmt.Errorf("%s: read %d bytes, the directory says %d", name, len(data), info.Size())
	}
	return data[:info.Size()], nil
}

// squashTree adds what measure needs and go-diskfs's squashfs lacks:
// Lstat and ReadLink (fs.ReadLinkFS), from the parent directory's entries.
type squashTree struct{ *squashfs.FileSystem }

func (s squashTree) entry(name string) (fs.DirEntry, error) {
	dir, base := path.Split(name)
	if dir == "" {
		dir = "."
	}
	entries, err := s.ReadDir(path.Clean(dir))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() == base {
			return e, nil
		}
	}
	return nil, &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
}

func (s squashTree) Lstat(name string) (fs.FileInfo, error) {
	if name == "." {
		return s.Stat(".")
	}
	e, err := s.entry(name)
	if err != nil {
		return nil, err
	}
	return e.Info()
}

func (s squashTree) ReadLink(name string) (string, error) {
	e, err := s.entry(name)
	if err != nil {
		return "", err
	}
	l, ok := e.(interface{ Readlink() (string, error) })
	if !ok || e.Type() != fs.ModeSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: errors.New("not a symlink")}
	}
	return l.Readlink()
}
