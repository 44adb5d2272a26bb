// Package measure is the custodian's measured boot: the one definition of
// what the early init measures, in which order, into which PCR, and as
// which event. Both the device (`custodian measure-boot`, [Boot]) and the
// build host (`custodian image measure`, [Spec.Events] on the image's
// inputs) use it, so the prediction cannot drift from the device.
//
// The sequence, for a root filesystem R and a [Spec] S:
//
//  1. rootfs: the tree digest of R (see [TreeDigest]) into S.RootFSPCR
//  2. binary: SHA-256 of the file S.Binary into S.BinaryPCR
//  3. config: SHA-256 of the file S.Config into S.ConfigPCR, then
//     security-version: S.SecurityVersion (the manifest's
//     security_version) into S.ConfigPCR, so the version shares and keys
//     are sealed for is part of the measured boot
//  4. trust-roots: the tree digest of the directory S.TrustRoots into
//     S.TrustRootsPCR
//  5. one separator event into each PCR of S.SeparatorPCRs, ascending
//
// The separator closes the sequence. The policy a share is sealed to is
// the value after it, and PCRs can only be extended, never set: once the
// separator is in, no later code can bring a PCR back to a pre-separator
// value or reach the policy value along another path, and any measurement
// after it (a second run, a root filesystem mounted later) moves the PCR
// off the policy until the next reboot. A selection the separator does not
// cover is refused ([Spec.Check]): such a PCR could be extended further
// by later code and still match a policy that ends too early.
//
// [Boot] refuses to run twice in one boot, with two checks: it creates a
// marker file in the run directory (tmpfs /run, empty at every boot) with
// O_EXCL, which also stops two concurrent runs; and it requires every PCR
// it will extend to be all zero, which no software can fake, because the
// Pi's firmware measures nothing into PCRs 8–15 and they cannot be reset.
// The marker alone could be deleted by root; the PCR check alone would let
// two concurrent runs both pass.
package measure

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/tpm"
)

// Spec says where the measured parts live in the root filesystem and which
// PCR each goes to. Paths are slash-separated and relative to the root.
type Spec struct {
	Binary        string
	Config        string
	TrustRoots    string
	RootFSPCR     int
	BinaryPCR     int
	ConfigPCR     int
	TrustRootsPCR int
	SeparatorPCRs []int
	// SecurityVersion is the image's security version (1 and up), measured
	// into ConfigPCR after the configuration.
	SecurityVersion uint64
}

// DefaultSpec is the layout of the custodian image: rootfs in PCR 8, the
// binary in 9, configuration in 11, trust roots in 12 (10 is IMA's).
func DefaultSpec() Spec {
	return Spec{
		Binary:          "usr/bin/custodian",
		Config:          "etc/custodian/config.toml",
		TrustRoots:      "etc/custodian/trust",
		RootFSPCR:       8,
		BinaryPCR:       9,
		ConfigPCR:       11,
		TrustRootsPCR:   12,
		SeparatorPCRs:   []int{8, 9, 11, 12},
		SecurityVersion: 1,
	}
}

// ErrUncoveredPCR is returned for a spec that measures into a PCR the
// separator does not close.
var ErrUncoveredPCR = errors.New("the separator does not cover a measured PCR")

// Check refuses PCRs outside 8–15 or 10, paths that are not clean
// relative paths, and a separator selection that misses a measured PCR.
func (s Spec) Check() error {
	if err := tpm.CheckSecurityVersion(s.SecurityVersion); err != nil {
		return err
	}
	for _, p := range []string{s.Binary, s.Config, s.TrustRoots} {
		if !fs.ValidPath(p) || p == "." {
			return fmt.Errorf("measured path %q must be a clean path relative to the root, without a leading /", p)
		}
	}
	for _, i := range append(s.measuredPCRs(), s.SeparatorPCRs...) {
		if i < 8 || i > 15 || i == 10 {
			return fmt.Errorf("PCR %d cannot hold boot measurements (use 8, 9 or 11 to 15)", i)
		}
	}
	sorted := slices.Sorted(slices.Values(s.SeparatorPCRs))
	if len(slices.Compact(sorted)) != len(s.SeparatorPCRs) {
		return errors.New("separator PCRs are listed twice")
	}
	for _, i := range s.measuredPCRs() {
		if !slices.Contains(s.SeparatorPCRs, i) {
			return fmt.Errorf("%w: PCR %d is measured but not in the separator PCRs %v", ErrUncoveredPCR, i, s.SeparatorPCRs)
		}
	}
	return nil
}

func (s Spec) measuredPCRs() []int {
	return []int{s.RootFSPCR, s.BinaryPCR, s.ConfigPCR, s.TrustRootsPCR}
}

// PCRs lists every PCR the sequence extends, ascending.
func (s Spec) PCRs() []int {
	return slices.Compact(slices.Sorted(slices.Values(append(s.measuredPCRs(), s.SeparatorPCRs...))))
}

// ModeFunc maps a file's mode in the tree to the mode it has (or will have)
// on the device. The device measures with nil (modes as they are); the
// build host passes the image builder's normalisation.
type ModeFunc func(fs.FileMode) fs.FileMode

// Events measures root and returns the boot's events in order. It is the
// measurement sequence: nothing else decides what is measured.
func (s Spec) Events(root fs.FS, mode ModeFunc) ([]bootpolicy.Event, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	rootDigest, err := TreeDigest(root, mode)
	if err != nil {
		return nil, fmt.Errorf("measuring the root filesystem: %w", err)
	}
	bin, err := fileDigest(root, s.Binary)
	if err != nil {
		return nil, err
	}
	cfg, err := fileDigest(root, s.Config)
	if err != nil {
		return nil, err
	}
	trust, err := subtreeDigest(root, s.TrustRoots, mode)
	if err != nil {
		return nil, err
	}
	events := []bootpolicy.Event{
		bootpolicy.NewEvent(s.RootFSPCR, bootpolicy.KindRootFS, "/", rootDigest),
		bootpolicy.NewEvent(s.BinaryPCR, bootpolicy.KindBinary, "/"+s.Binary, bin),
		bootpolicy.NewEvent(s.ConfigPCR, bootpolicy.KindConfig, "/"+s.Config, cfg),
		bootpolicy.NewSecurityVersion(s.ConfigPCR, s.SecurityVersion),
		bootpolicy.NewEvent(s.TrustRootsPCR, bootpolicy.KindTrustRoots, "/"+s.TrustRoots, trust),
	}
	for _, i := range slices.Sorted(slices.Values(s.SeparatorPCRs)) {
		events = append(events, bootpolicy.NewSeparator(i))
	}
	return events, nil
}

// Predict measures root as the device will see it and returns the policy.
func (s Spec) Predict(root fs.FS, mode ModeFunc) (*bootpolicy.Policy, error) {
	events, err := s.Events(root, mode)
	if err != nil {
		return nil, err
	}
	return bootpolicy.New(events)
}

// NoLinkOnPath refuses a measured path (slash-separated, relative to
// root) whose directories are not all real directories: with a link on the
// way (etc/custodian -> ../var/lib/custodian/etc), what is measured at
// boot is a file under a mount point, and once the data partition is
// mounted there the same path names a file nobody measured. The last
// component is the caller's to check.
func NoLinkOnPath(root fs.FS, name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		info, err := fs.Lstat(root, p)
		if err != nil {
			return fmt.Errorf("measuring /%s: %w", name, err)
		}
		if !info.IsDir() {
			return fmt.Errorf("measuring /%s: /%s is not a directory (a symbolic link or a file): every directory on a measured path must be a real one in the image", name, p)
		}
	}
	return nil
}

// fileDigest hashes a regular file; a symlink or anything else is refused,
// so what is measured is what the path names inside the image.
func fileDigest(root fs.FS, name string) ([sha256.Size]byte, error) {
	if err := CheckRegular(root, name); err != nil {
		return [sha256.Size]byte{}, err
	}
	return hashFile(root, name)
}

// CheckRegular refuses name unless it is a regular file of root itself
// (not a symlink): what the device measures at that path. The image
// builder runs it on the binary it puts into the initramfs.
func CheckRegular(root fs.FS, name string) error {
	if err := NoLinkOnPath(root, name); err != nil {
		return err
	}
	info, err := fs.Lstat(root, name)
	if err != nil {
		return fmt.Errorf("measuring /%s: %w", name, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("measuring /%s: not a regular file", name)
	}
	return nil
}

func hashFile(root fs.FS, name string) ([sha256.Size]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("reading /%s: %w", name, err)
	}
	return [sha256.Size]byte(h.Sum(nil)), nil
}

func subtreeDigest(root fs.FS, dir string, mode ModeFunc) ([sha256.Size]byte, error) {
	if err := NoLinkOnPath(root, dir); err != nil {
		return [sha256.Size]byte{}, err
	}
	info, err := fs.Lstat(root, dir)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("measuring /%s: %w", dir, err)
	}
	if !info.IsDir() {
		return [sha256.Size]byte{}, fmt.Errorf("measuring /%s: not a directory", dir)
	}
	d, err := treeDigest(root, dir, mode)
	if err != nil {
		return d, fmt.Errorf("measuring /%s: %w", path.Clean(dir), err)
	}
	return d, nil
}
