package builder

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/image"
)

// Names inside the initramfs, as the early init reads them.
const (
	InitName        = "init"
	ModulesDir      = "modules"
	ModuleOrderName = "modules/order"
)

// initramfsEntry is one file of the initramfs.
type initramfsEntry struct {
	name string
	mode cpio.FileMode
	data []byte
}

// buildInitramfs makes the initramfs (gzip-compressed newc cpio) with
// exactly /init (the root's measured binary), /custodian.toml (the
// manifest), /root.sha256 (the pin of the slot's root filesystem),
// /modules/order and the modules it lists, in the manifest's order. Every entry is owned by root, has the time source_date_epoch
// and an inode number given by its position, so the bytes are the same
// on every build.
func buildInitramfs(m *image.Manifest, root fs.FS, sources map[string][]byte, pin image.RootPin) ([]byte, error) {
	// The device measures the binary at its path in the root: a symlink
	// there would put the file it leads to (on the build host) into /init.
	if err := measure.CheckRegular(root, m.Measure.Binary); err != nil {
		return nil, fmt.Errorf("the initramfs's /init is measure.binary: %w", err)
	}
	init, err := fs.ReadFile(root, m.Measure.Binary)
	if err != nil {
		return nil, fmt.Errorf("the initramfs's /init is measure.binary (%s in the root filesystem): %w", m.Measure.Binary, err)
	}
	entries := []initramfsEntry{
		{name: InitName, mode: cpio.TypeReg | 0o755, data: init},
		{name: image.ManifestName, mode: cpio.TypeReg | 0o644, data: m.Raw()},
		{name: image.RootPinName, mode: cpio.TypeReg | 0o644, data: pin.Marshal()},
		{name: ModulesDir, mode: cpio.TypeDir | 0o755},
	}
	var order strings.Builder
	var modules []initramfsEntry
	for _, s := range m.Initramfs.Modules {
		src, _ := image.ParseSource(s)
		base := path.Base(src.Path)
		fmt.Fprintln(&order, base)
		modules = append(modules, initramfsEntry{name: ModulesDir + "/" + base, mode: cpio.TypeReg | 0o644, data: sources[s]})
	}
	entries = append(entries, initramfsEntry{name: ModuleOrderName, mode: cpio.TypeReg | 0o644, data: []byte(order.String())})
	entries = append(entries, modules...)
	return writeInitramfs(entries, m.Epoch())
}

func writeInitramfs(entries []initramfsEntry, t time.Time) ([]byte, error) {
	var buf bytes.Buffer
	// No name and no time in the gzip header: the bytes depend on the
	// content alone.
	z, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	w := cpio.NewWriter(z)
	for i, e := range entries {
		links := 1
		if e.mode&cpio.TypeDir != 0 {
			links = 2
		}
		hdr := &cpio.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)), ModTime: t, Links: links, Inode: int64(i + 1)}
		if e.mode&cpio.TypeDir != 0 {
			hdr.Size = 0
		}
		if err := w.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
