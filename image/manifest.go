// Package image is the custodian's SD-card image as the operator describes
// it: the manifest, and the prediction of the PCR values the image produces
// at boot ([Manifest.Predict], the same measurement sequence measure-boot
// runs, from package firmware/measure). Package image/builder writes the
// image itself; it is kept apart so that the appliance build can leave the
// disk libraries out.
//
// The manifest is TOML (docs/image.md has every key), parsed strictly: an
// unknown key, a wrong type, a file over 64 KiB, a path that leaves the
// manifest's directory, or a measurement selection the separator does not
// cover is refused. Paths in it are relative to the manifest's directory.
package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
)

const maxManifestSize = 64 << 10

// Manifest is a parsed image manifest.
type Manifest struct {
	Version         int   `toml:"version"`
	SourceDateEpoch int64 `toml:"source_date_epoch"`
	// SecurityVersion is the image's security version: raise it with every
	// image that fixes a flaw, so that the devices' floor can lock out the
	// older ones. It is measured at boot and carried into policy.json.
	SecurityVersion uint64 `toml:"security_version"`
	// Sizes in MiB. Those of 0 are computed by the build: ImageMiB the
	// sum of the partitions, BootImgMiB what boot.img's files need,
	// BootMiB twice boot.img (at least 24), RootMiB twice the squashfs.
	ImageMiB    int `toml:"image_mib"`
	AutobootMiB int `toml:"autoboot_mib"`
	BootMiB     int `toml:"boot_mib"`
	BootImgMiB  int `toml:"boot_img_mib"`
	RootMiB     int `toml:"root_mib"`
	DataMiB     int `toml:"data_mib"`

	// Debs are the Debian packages that sources of the form
	// deb:NAME:/path read from, each pinned by its SHA-256.
	Debs []Deb `toml:"debs"`

	Boot struct {
		Config  string     `toml:"config"`
		Cmdline string     `toml:"cmdline"`
		Files   []BootFile `toml:"files"`
	} `toml:"boot"`

	RootFS struct {
		Dir string `toml:"dir"`
		// Compression of the squashfs: CompressionGzip or CompressionNone.
		Compression string `toml:"compression"`
		// Files are added to the tree of Dir (none may replace one of it).
		Files []RootFile `toml:"files"`
	} `toml:"rootfs"`

	Initramfs struct {
		// Modules are the kernel modules the early init loads, in this
		// order: sources (see [ParseSource]).
		Modules []string `toml:"modules"`
	} `toml:"initramfs"`

	Measure struct {
		Binary        string `toml:"binary"`
		Config        string `toml:"config"`
		TrustRoots    string `toml:"trust_roots"`
		RootFSPCR     int    `toml:"rootfs_pcr"`
		BinaryPCR     int    `toml:"binary_pcr"`
		ConfigPCR     int    `toml:"config_pcr"`
		TrustRootsPCR int    `toml:"trust_roots_pcr"`
		SeparatorPCRs []int  `toml:"separator_pcrs"`
	} `toml:"measure"`

	dir string // the manifest's directory, for relative paths
	raw []byte // the manifest as read, copied into boot.img
}

// BootFile is one file copied into boot.img: Src a source (see
// [ParseSource]), Dst its path inside boot.img.
type BootFile struct {
	Src string `toml:"src"`
	Dst string `toml:"dst"`
}

// RootFile is one file added to the root filesystem: Src a source (see
// [ParseSource]), Dst its path in the root, Executable for mode 0755
// rather than 0644.
type RootFile struct {
	Src        string `toml:"src"`
	Dst        string `toml:"dst"`
	Executable bool   `toml:"executable"`
}

// Deb is a Debian package the manifest takes files from: File relative to
// the manifest, SHA256 its pinned digest (lowercase hex).
type Deb struct {
	Name   string `toml:"name"`
	File   string `toml:"file"`
	SHA256 string `toml:"sha256"`
}

// Source is where an input file comes from: Path inside the manifest's
// deb named Deb ("deb:NAME:/absolute/path"), or, when Deb is empty, Path
// on the build host relative to the manifest.
type Source struct {
	Deb  string
	Path string
}

// DebPrefix starts a source inside a deb: deb:NAME:/path.
const DebPrefix = "deb:"

// ParseSource reads a source: "deb:NAME:/path/in/package" or a path
// relative to the manifest.
func ParseSource(s string) (Source, error) {
	rest, ok := strings.CutPrefix(s, DebPrefix)
	if !ok {
		if !localPath(s) {
			return Source{}, fmt.Errorf("path %q must be relative to the manifest and stay below it (or deb:NAME:/path for a file in a deb)", s)
		}
		return Source{Path: s}, nil
	}
	name, p, ok := strings.Cut(rest, ":")
	if !ok || !validDebName(name) || !strings.HasPrefix(p, "/") || !fs.ValidPath(p[1:]) || p == "/" {
		return Source{}, fmt.Errorf("source %q: write deb:NAME:/absolute/path, NAME one of the [[debs]] names", s)
	}
	return Source{Deb: name, Path: p}, nil
}

func (s Source) String() string {
	if s.Deb == "" {
		return s.Path
	}
	return DebPrefix + s.Deb + ":" + s.Path
}

func validDebName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ManifestName is where the manifest sits inside boot.img, so the early
// init reads the measurement layout from the signed boot image.
const ManifestName = "custodian.toml"

// Root filesystem compressions.
const (
	CompressionGzip = "gzip"
	CompressionNone = "none"
)

// InitramfsName is the initramfs inside boot.img, which the build makes
// (config.txt: initramfs initramfs.img followkernel).
const InitramfsName = "initramfs.img"

// LoadManifest reads and checks the manifest at path.
func LoadManifest(file string) (*Manifest, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, err
	}
	return ParseManifest(data, abs)
}

// ParseManifest parses manifest text; dir resolves its relative paths.
func ParseManifest(data []byte, dir string) (*Manifest, error) {
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("manifest: %d bytes, at most %d allowed", len(data), maxManifestSize)
	}
	m := defaults()
	md, err := toml.Decode(string(data), m)
	var perr toml.ParseError
	if errors.As(err, &perr) {
		// The decoder's own text begins "toml:"; say where, in the
		// manifest's terms.
		return nil, fmt.Errorf("manifest: line %d: %s", perr.Position.Line, perr.Message)
	}
	if err != nil { // a value of the wrong type: "toml: line N (last key K): ..."
		return nil, fmt.Errorf("manifest: %s", strings.TrimPrefix(err.Error(), "toml: "))
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("manifest: unknown key %q", und[0].String())
	}
	// The TOML decoder also takes a key that matches a field only when case
	// is ignored; the manifest accepts field names exactly as written.
	for _, key := range md.Keys() {
		if err := checkExactKey(reflect.TypeFor[Manifest](), key); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
	}
	m.dir, m.raw = dir, data
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return m, nil
}

// checkExactKey refuses a key whose every part is not exactly the toml
// name of a field, in the struct the key walks through from t.
func checkExactKey(t reflect.Type, key toml.Key) error {
	for _, part := range key {
		for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		field, ok := fieldByTOMLName(t, part)
		if !ok {
			return fmt.Errorf("unknown key %q (names are case-sensitive)", key.String())
		}
		t = field.Type
	}
	return nil
}

func fieldByTOMLName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("toml"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func defaults() *Manifest {
	m := &Manifest{AutobootMiB: 8}
	m.RootFS.Compression = CompressionGzip
	s := measure.DefaultSpec()
	m.Measure.Binary, m.Measure.Config, m.Measure.TrustRoots = s.Binary, s.Config, s.TrustRoots
	m.Measure.RootFSPCR, m.Measure.BinaryPCR = s.RootFSPCR, s.BinaryPCR
	m.Measure.ConfigPCR, m.Measure.TrustRootsPCR = s.ConfigPCR, s.TrustRootsPCR
	m.Measure.SeparatorPCRs = s.SeparatorPCRs
	return m
}

// Size limits keep the FAT16 file systems within what FAT16 and the Pi's
// ramdisk loader accept.
func (m *Manifest) check() error {
	if m.Version != 1 {
		return fmt.Errorf("version %d is not supported (want version = 1)", m.Version)
	}
	if m.SecurityVersion == 0 {
		return errors.New("security_version is required: 1 for a first image, raised by one with every image that fixes a flaw")
	}
	if m.SourceDateEpoch <= 0 || m.SourceDateEpoch > 1<<32-1 {
		return errors.New("source_date_epoch must be a Unix time in seconds (squashfs keeps 32 bits)")
	}
	if m.BootImgMiB != 0 && (m.BootImgMiB < 8 || m.BootImgMiB > 256) {
		return errors.New("sizes: boot_img_mib is 8 to 256 (FAT16 needs 8 MiB), or left out to fit boot.img's files")
	}
	if m.BootMiB != 0 && (m.BootMiB < max(m.BootImgMiB, 8)+2 || m.BootMiB > 1024) {
		return errors.New("sizes: boot_mib is boot_img_mib+2 to 1024, or left out to be twice boot.img")
	}
	if err := m.checkSizes(); err != nil {
		return err
	}
	if m.RootFS.Dir == "" {
		return errors.New("rootfs.dir is required")
	}
	if m.RootFS.Compression != CompressionGzip && m.RootFS.Compression != CompressionNone {
		return fmt.Errorf("rootfs.compression %q: write %q or %q", m.RootFS.Compression, CompressionGzip, CompressionNone)
	}
	for _, p := range []string{m.Boot.Config, m.Boot.Cmdline, m.RootFS.Dir} {
		if p != "" && !localPath(p) {
			return fmt.Errorf("path %q must be relative to the manifest and stay below it", p)
		}
	}
	if err := m.checkSources(); err != nil {
		return err
	}
	roots := map[string]bool{}
	for _, f := range m.RootFS.Files {
		if !fs.ValidPath(f.Dst) || f.Dst == "." || roots[f.Dst] {
			return fmt.Errorf("rootfs file destination %q must be a unique clean relative path", f.Dst)
		}
		roots[f.Dst] = true
	}
	seen := map[string]bool{"config.txt": true, "cmdline.txt": true, ManifestName: true, InitramfsName: true}
	for _, f := range m.Boot.Files {
		dst := strings.ToLower(f.Dst)
		if !fs.ValidPath(f.Dst) || f.Dst == "." || seen[dst] {
			return fmt.Errorf("boot file destination %q must be a unique clean relative path", f.Dst)
		}
		seen[dst] = true
	}
	return m.Spec().Check()
}

// checkSizes checks the sizes the manifest gives; whether they fit what
// the build puts in is checked by the build, which knows.
func (m *Manifest) checkSizes() error {
	if m.AutobootMiB < 8 || m.AutobootMiB > 64 {
		return errors.New("sizes: need 8 <= autoboot_mib <= 64 (FAT16 needs 8 MiB)")
	}
	if m.RootMiB < 0 || m.RootMiB > 8<<10 || m.RootMiB > 0 && m.RootMiB < 4 {
		return errors.New("sizes: root_mib is 4 to 8192, or left out to be twice the root filesystem")
	}
	if m.DataMiB != 0 && (m.DataMiB < 8 || m.DataMiB > 64<<10) {
		return errors.New("sizes: data_mib is 8 to 65536, or left out to hold the ledger and an update file")
	}
	if m.ImageMiB < 0 || m.ImageMiB > 128<<10 {
		return errors.New("sizes: image_mib is at most 131072 (128 GiB), or left out to be the sum of the partitions")
	}
	return nil
}

// checkSources checks the debs and every source that names one.
func (m *Manifest) checkSources() error {
	debs := map[string]bool{}
	for _, d := range m.Debs {
		if !validDebName(d.Name) || debs[d.Name] {
			return fmt.Errorf("debs: name %q must be unique, 1-64 of a-z 0-9 - _", d.Name)
		}
		debs[d.Name] = true
		if !localPath(d.File) {
			return fmt.Errorf("debs %s: file %q must be relative to the manifest and stay below it", d.Name, d.File)
		}
		if len(d.SHA256) != 64 || strings.Trim(d.SHA256, "0123456789abcdef") != "" {
			return fmt.Errorf("debs %s: sha256 must be 64 lowercase hex digits (sha256sum %s prints it)", d.Name, d.File)
		}
	}
	modules := map[string]bool{}
	for _, s := range m.Sources() {
		src, err := ParseSource(s)
		if err != nil {
			return err
		}
		if src.Deb != "" && !debs[src.Deb] {
			return fmt.Errorf("source %q names deb %q, which no [[debs]] entry defines", s, src.Deb)
		}
	}
	for _, s := range m.Initramfs.Modules {
		src, _ := ParseSource(s)
		base := path.Base(filepath.ToSlash(src.Path))
		if base == "order" || modules[base] || !(strings.HasSuffix(base, ".ko") || strings.HasSuffix(base, ".ko.xz")) {
			return fmt.Errorf("initramfs module %q: each module is a distinct .ko or .ko.xz file name", s)
		}
		modules[base] = true
	}
	return nil
}

// Sources lists every source the manifest names: boot files, initramfs
// modules, then root filesystem files.
func (m *Manifest) Sources() []string {
	var s []string
	for _, f := range m.Boot.Files {
		s = append(s, f.Src)
	}
	return append(append(s, m.Initramfs.Modules...), m.RootSources()...)
}

// RootSources lists the sources of rootfs.files.
func (m *Manifest) RootSources() []string {
	var s []string
	for _, f := range m.RootFS.Files {
		s = append(s, f.Src)
	}
	return s
}

// ErrRootFiles is the refusal of [Manifest.Predict] for a manifest that
// adds files to the root: their content is in the sources, which the
// image builder reads (builder.PredictManifest).
var ErrRootFiles = errors.New("this manifest adds files to the root filesystem (rootfs.files): predicting it needs the image builder, which reads their sources")

func localPath(p string) bool {
	return filepath.IsLocal(p) && fs.ValidPath(path.Clean(filepath.ToSlash(p)))
}

// Spec is the measurement layout the manifest names.
func (m *Manifest) Spec() measure.Spec {
	return measure.Spec{
		Binary:          m.Measure.Binary,
		Config:          m.Measure.Config,
		TrustRoots:      m.Measure.TrustRoots,
		RootFSPCR:       m.Measure.RootFSPCR,
		BinaryPCR:       m.Measure.BinaryPCR,
		ConfigPCR:       m.Measure.ConfigPCR,
		TrustRootsPCR:   m.Measure.TrustRootsPCR,
		SeparatorPCRs:   m.Measure.SeparatorPCRs,
		SecurityVersion: m.SecurityVersion,
	}
}

// path resolves a manifest-relative path.
func (m *Manifest) path(p string) string { return filepath.Join(m.dir, filepath.FromSlash(p)) }

// RootFS is the root filesystem's source tree on the build host.
func (m *Manifest) RootTree() fs.FS { return os.DirFS(m.path(m.RootFS.Dir)) }

// Predict computes the policy the image produces at boot: the measurement
// sequence run over the root filesystem source as the builder puts it into
// the image (modes normalised by [NormalMode]).
//
// A manifest with rootfs.files is refused ([ErrRootFiles]).
func (m *Manifest) Predict() (*bootpolicy.Policy, error) {
	if len(m.RootFS.Files) > 0 {
		return nil, ErrRootFiles
	}
	return m.Spec().Predict(m.RootTree(), NormalMode)
}

// NormalMode is the mode an entry of the root filesystem source gets in the
// image: directories 0755, files 0755 if any execute bit is set and 0644
// otherwise, symlinks 0777. Setuid, setgid and sticky bits are dropped;
// the appliance needs none. image measure predicts with this function, so
// it must stay the one the builder applies.
func NormalMode(m fs.FileMode) fs.FileMode {
	switch {
	case m.IsDir():
		return fs.ModeDir | 0o755
	case m.Type() == fs.ModeSymlink:
		return fs.ModeSymlink | 0o777
	case m&0o111 != 0:
		return 0o755
	default:
		return 0o644
	}
}

// Resolve turns a manifest-relative path into a path on the build host.
func (m *Manifest) Resolve(p string) string { return m.path(p) }

// Raw is the manifest's text as read; the builder copies it into boot.img.
func (m *Manifest) Raw() []byte { return m.raw }

// Epoch is source_date_epoch as a time: every time stamp in the image.
func (m *Manifest) Epoch() time.Time { return time.Unix(m.SourceDateEpoch, 0).UTC() }
