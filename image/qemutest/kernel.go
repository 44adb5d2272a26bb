package qemutest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/tests/need"
)

// Kernel is the kernel the emulated machine boots, as .ci/kernel prepares
// it: Debian's arm64 kernel package and tpm_tis.ko built for it.
type Kernel struct {
	Dir     string
	Image   string // vmlinuz
	Deb     string // the linux-image package as Debian ships it
	TPMTis  string // tpm_tis.ko, built out of tree
	TPMCore string // the kernel's own tpm_tis_core module
	Release string // the kernel release, as uname -r says
}

// RequireKernel runs .ci/kernel, which downloads and builds on its first
// run and answers from its cache after, and returns what it made. Without
// QEMU, the cross compiler or Debian's arm64 packages the test ends
// through need.Missing, saying what to install.
func RequireKernel(t testing.TB) Kernel {
	t.Helper()
	need.Command(t, "qemu-system-aarch64", "qemu-system-arm")
	need.Command(t, "aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu")
	need.Command(t, "apt-get", "apt")
	need.Command(t, "make", "make")
	root := repoRoot(t)
	cmd := exec.Command("sh", filepath.Join(root, ".ci", "kernel"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		need.Missing(t, "the emulated boot's kernel is not available (sh .ci/kernel: %v):\n%s", err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	k := Kernel{
		Dir:    dir,
		Image:  filepath.Join(dir, "vmlinuz"),
		TPMTis: filepath.Join(dir, "tpm_tis.ko"),
	}
	release, err := os.ReadFile(filepath.Join(dir, "release"))
	if err != nil {
		t.Fatalf("the kernel directory is incomplete: %v", err)
	}
	k.Release = strings.TrimSpace(string(release))
	debs, err := filepath.Glob(filepath.Join(dir, "linux-image-*.deb"))
	if err != nil || len(debs) != 1 {
		t.Fatalf("%s holds no single kernel package (%v)", dir, debs)
	}
	k.Deb = debs[0]
	core, err := filepath.Glob(filepath.Join(dir, "modules", "tpm_tis_core.ko*"))
	if err != nil || len(core) != 1 {
		t.Fatalf("%s holds no single tpm_tis_core module (%v)", dir, core)
	}
	k.TPMCore = core[0]
	for _, f := range []string{k.Image, k.Deb, k.TPMTis} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("the kernel directory is incomplete: %v", err)
		}
	}
	return k
}

// repoRoot is the directory holding go.mod, above the test's directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
