package measure

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// What is measured is what the path names inside the image, in every
// component. A root whose etc/custodian is a relative link into
// var/lib/custodian would measure, at boot, the file the squashfs keeps
// under the data partition's mount point (PCR 11 gets its digest); once
// the early init mounts the data partition there, /etc/custodian/config.toml
// names a file on the data partition, which is never measured. Such a root
// is refused, by the device and the build host alike (both measure with
// Spec.Events).
func TestInvariantMeasuredPathsHaveNoLinks(t *testing.T) {
	root := t.TempDir()
	write := func(name, data string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/bin/custodian", "the custodian binary", 0o755)
	write("var/lib/custodian/etc/config.toml", "the measured configuration", 0o644)
	write("var/lib/custodian/etc/trust/a.pem", "court root", 0o644)
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../var/lib/custodian/etc", filepath.Join(root, "etc/custodian")); err != nil {
		t.Fatal(err)
	}

	events, err := DefaultSpec().Events(os.DirFS(root), nil)
	if err != nil {
		if !strings.Contains(err.Error(), "/etc/custodian is not a directory") {
			t.Errorf("refused, but not for the link: %v", err)
		}
		return // refused: what is measured is what the path names in the image
	}
	measured := sha256.Sum256([]byte("the measured configuration"))
	for _, e := range events {
		if e.Name == "/etc/custodian/config.toml" && string(e.Measured) != string(measured[:]) {
			t.Fatalf("config measured as %x, want the hidden file's digest", e.Measured)
		}
	}

	// The early init mounts the data partition on var/lib/custodian: the
	// squashfs's files there are hidden, the partition's show.
	data := filepath.Join(root, "var/lib/custodian")
	if err := os.Rename(data, filepath.Join(root, "hidden-under-mount")); err != nil {
		t.Fatal(err)
	}
	write("var/lib/custodian/etc/config.toml", "[serve]\nlisten = \"0.0.0.0:9999\" # from the data partition\n", 0o644)
	read, err := os.ReadFile(filepath.Join(root, "etc/custodian/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(read) != measured {
		t.Errorf("measured the configuration at /etc/custodian/config.toml through the symlinked directory etc/custodian (digest %x); after the data partition is mounted the same path reads %q from the data partition", measured, read)
	}
}

// The binary's directories and the trust roots' directory itself are
// held to the same rule.
func TestMeasuredPathsRefuseLinksAnywhere(t *testing.T) {
	for _, link := range []struct{ at string }{
		{"usr/bin"},
		{"etc"},
	} {
		t.Run(link.at, func(t *testing.T) {
			root := t.TempDir()
			real := filepath.Join(root, filepath.FromSlash(link.at)+".real")
			for _, f := range []string{"usr/bin/custodian", "etc/custodian/config.toml", "etc/custodian/trust/a.pem"} {
				p := filepath.Join(root, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			at := filepath.Join(root, link.at)
			if err := os.Rename(at, real); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Base(real), at); err != nil {
				t.Fatal(err)
			}
			_, err := DefaultSpec().Events(os.DirFS(root), nil)
			if err == nil || !strings.Contains(err.Error(), "/"+link.at+" is not a directory") {
				t.Errorf("a link at /%s: err = %v, want a refusal naming it", link.at, err)
			}
		})
	}
}

// Boot keeps a read-only copy of the configuration bytes it measured, the
// only configuration the root init reads: one source of truth, whatever
// is mounted over the root's paths after the measurement.
func TestInvariantMeasuredConfigIsTheOneRead(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		root := testRoot()
		runDir := t.TempDir()
		events, err := Boot(conn, DefaultSpec(), root, runDir)
		if err != nil {
			t.Fatal(err)
		}
		kept := filepath.Join(runDir, ConfigFile)
		data, err := os.ReadFile(kept)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		var measured []byte
		for _, e := range events {
			if e.Name == "/etc/custodian/config.toml" {
				measured = e.Measured
			}
		}
		if string(measured) != string(sum[:]) || string(data) != "config" {
			t.Errorf("kept %q (sha256 %x), measured %x", data, sum, measured)
		}
		if fi, err := os.Stat(kept); err != nil || fi.Mode().Perm() != 0o444 {
			t.Errorf("the kept configuration: %v, mode %v, want 0444", err, fi.Mode())
		}
	})
}

// Bytes that differ from the measured ones (the file changed between the
// measurement and the copy) are not kept.
func TestBootKeepsOnlyTheMeasuredConfig(t *testing.T) {
	root := testRoot()
	events, err := DefaultSpec().Events(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	root["etc/custodian/config.toml"].Data = []byte("changed")
	runDir := t.TempDir()
	if err := keepConfig(root, DefaultSpec(), events, runDir); err == nil || !strings.Contains(err.Error(), "changed after it was measured") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(runDir, ConfigFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a configuration was kept: %v", err)
	}
}
