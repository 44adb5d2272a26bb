package image

import (
	"errors"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/image/imagetest"
)

func TestManifestDefaults(t *testing.T) {
	m, err := ParseManifest([]byte(imagetest.Manifest), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := m.Spec()
	if got, want := s.PCRs(), []int{8, 9, 11, 12}; len(got) != len(want) {
		t.Fatalf("PCRs %v, want %v", got, want)
	}
	if m.ImageMiB != 0 || m.AutobootMiB != 8 || m.DataMiB != 0 || m.RootFS.Compression != CompressionGzip || s.Binary != "usr/bin/custodian" {
		t.Fatalf("defaults not applied: %+v", m)
	}
}

func TestManifestRefuses(t *testing.T) {
	cases := map[string]struct{ add, want string }{
		"unknown key":         {"colour = \"blue\"\n", "unknown key \"colour\""},
		"unknown table key":   {"[measure]\nbinary_pcrs = 9\n", "unknown key \"measure.binary_pcrs\""},
		"wrong type":          {"image_mib = \"big\"\n", "manifest"},
		"PCR 10":              {"[measure]\nconfig_pcr = 10\nseparator_pcrs = [8, 9, 10, 12]\n", "PCR 10 cannot"},
		"PCR 23":              {"[measure]\nseparator_pcrs = [8, 9, 11, 12, 23]\n", "PCR 23 cannot"},
		"uncovered PCR":       {"[measure]\nseparator_pcrs = [8, 9, 11]\n", "separator does not cover"},
		"escaping rootfs":     {"[measure]\nbinary = \"../x\"\n", "clean path"},
		"absolute binary":     {"[measure]\nbinary = \"/usr/bin/custodian\"\n", "clean path"},
		"negative image":      {"image_mib = -1\n", "image_mib"},
		"small root":          {"root_mib = 2\n", "root_mib"},
		"small boot.img":      {"boot_img_mib = 4\n", "boot_img_mib"},
		"boot below boot.img": {"boot_img_mib = 20\nboot_mib = 21\n", "boot_mib"},
		"compression":         {"[rootfs.x]\n", "unknown key"},
		"deb without hash":    {"[[debs]]\nname = \"kernel\"\nfile = \"k.deb\"\n", "sha256 must be 64 lowercase hex"},
		"deb upper-case hash": {"[[debs]]\nname = \"kernel\"\nfile = \"k.deb\"\nsha256 = \"" + strings.Repeat("A", 64) + "\"\n", "lowercase hex"},
		"deb escaping":        {"[[debs]]\nname = \"kernel\"\nfile = \"../k.deb\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\n", "stay below it"},
		"deb twice":           {"[[debs]]\nname = \"k\"\nfile = \"k.deb\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\n[[debs]]\nname = \"k\"\nfile = \"k.deb\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\n", "must be unique"},
		"key in other case":   {"Image_MiB = 80\n", "unknown key \"Image_MiB\" (names are case-sensitive)"},
		"table in other case": {"[Measure]\nbinary_pcr = 9\n", "unknown key \"Measure\""},
		"folded key":          {"[measure]\nbinary_pcr = 9\nbinary = \"x\"\ntrust_roots_pcr = 12\n\"\u017feparator_pcrs\" = [8, 9, 11, 12]\n", "names are case-sensitive"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			text := imagetest.Manifest
			if strings.HasPrefix(c.add, "[") {
				text = strings.Replace(text, "[boot]\n", c.add+"\n[boot]\n", 1)
			} else {
				text = strings.Replace(text, "version = 1\n", "version = 1\n"+c.add, 1)
			}
			_, err := ParseManifest([]byte(text), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	for name, text := range map[string]string{
		"escaping rootfs dir":   "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"../rootfs\"\n",
		"absolute boot src":     "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[[boot.files]]\nsrc = \"/etc/shadow\"\ndst = \"x\"\n",
		"duplicate boot dst":    "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[[boot.files]]\nsrc = \"a\"\ndst = \"Config.txt\"\n",
		"no epoch":              "version = 1\n[rootfs]\ndir = \"r\"\n",
		"no security_version":   "version = 1\nsource_date_epoch = 1\n[rootfs]\ndir = \"r\"\n",
		"security_version 0":    "version = 1\nsource_date_epoch = 1\nsecurity_version = 0\n[rootfs]\ndir = \"r\"\n",
		"huge security_version": "version = 1\nsource_date_epoch = 1\nsecurity_version = 70000\n[rootfs]\ndir = \"r\"\n",
		"version 2":             "version = 2\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n",
		"unknown deb":           "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[[boot.files]]\nsrc = \"deb:kernel:/boot/vmlinuz\"\ndst = \"kernel8.img\"\n",
		"relative deb path":     "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[[debs]]\nname = \"k\"\nfile = \"k.deb\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\n[rootfs]\ndir = \"r\"\n[[boot.files]]\nsrc = \"deb:k:boot/vmlinuz\"\ndst = \"kernel8.img\"\n",
		"initramfs dst":         "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[[boot.files]]\nsrc = \"a\"\ndst = \"initramfs.img\"\n",
		"module twice":          "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[initramfs]\nmodules = [\"a/x.ko\", \"b/x.ko\"]\n",
		"module not a module":   "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[initramfs]\nmodules = [\"a/order\"]\n",
		"compression lz4":       "version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\ncompression = \"lz4\"\n",
	} {
		if _, err := ParseManifest([]byte(text), t.TempDir()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err := ParseManifest([]byte("version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[measure]\nseparator_pcrs = [8]\n"), "")
	if !errors.Is(err, measure.ErrUncoveredPCR) {
		t.Fatalf("uncovered PCR: %v", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(imagetest.Manifest))
	f.Add([]byte(imagetest.Manifest + "[[debs]]\nname = \"k\"\nfile = \"k.deb\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\n"))
	f.Add([]byte("version = 1\nsource_date_epoch = 1\nsecurity_version = 1\n[rootfs]\ndir = \"r\"\n[measure]\nseparator_pcrs = [8, 9, 11, 12, 13]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data, "/nonexistent")
		if err != nil {
			return
		}
		// Whatever parses names a layout measure-boot accepts.
		if err := m.Spec().Check(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestParseSource(t *testing.T) {
	for in, want := range map[string]Source{
		"boot/tpm_tis.ko": {Path: "boot/tpm_tis.ko"},
		"deb:kernel:/usr/lib/linux-image-6.1.0-57-arm64/broadcom/bcm2711-rpi-4-b.dtb": {Deb: "kernel", Path: "/usr/lib/linux-image-6.1.0-57-arm64/broadcom/bcm2711-rpi-4-b.dtb"},
	} {
		got, err := ParseSource(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("%q: got %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"/etc/shadow", "../x", "deb:kernel", "deb:kernel:boot/x", "deb:Kernel:/x", "deb::/x", "deb:k:/", "deb:k:/a/../b", "deb:k:/a//b"} {
		if _, err := ParseSource(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The appliance examples parse, every source naming a pinned deb.
func TestExampleManifestsParse(t *testing.T) {
	for _, name := range []string{"manifest.toml", "qemu.toml"} {
		m, err := LoadManifest("../docs/examples/appliance/" + name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(m.Debs) == 0 || len(m.Initramfs.Modules) < 8 {
			t.Errorf("%s: %d debs, %d modules", name, len(m.Debs), len(m.Initramfs.Modules))
		}
	}
}
