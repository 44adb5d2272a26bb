//go:build !appliance

package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEveryBuildHostUserErrorNamesCauseAndNextStep is
// TestEveryUserErrorNamesCauseAndNextStep for the commands only the build
// host's binary has: building and reading images.
func TestEveryBuildHostUserErrorNamesCauseAndNextStep(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	write := func(name, content string) string {
		if err := os.WriteFile(p(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p(name)
	}
	text := write("text.txt", "hello\n")
	os.Mkdir(p("adir"), 0o755)
	missing := p("no-manifest")
	policy := write("policy.json", `{"version": 1, "security_version": 1, "pcrs": {}, "events": []}`)
	for _, c := range []userError{
		{"manifest not there", []string{"image", "measure", "--manifest", missing, "--out", p("policy.json")},
			[]string{"--manifest: open " + missing, "hint: check the name: there is no " + missing}},
		{"policy as manifest", []string{"image", "build", "--manifest", policy, "--out", p("x.img")},
			[]string{"--manifest " + policy + " is not an image manifest (TOML): it is a boot policy (policy.json", "hint: the manifest is the TOML file docs/image.md describes"}},
		{"policy as disk image", []string{"image", "measure", "--image", policy, "--out", p("p2.json")},
			[]string{"--image " + policy + " is not a disk image custodian image build wrote: it is a boot policy (policy.json", "hint: --image is a disk image"}},
		{"text as disk image", []string{"image", "measure", "--image", text, "--out", p("policy.json")},
			[]string{"--image " + text, "hint: --image is a disk image custodian image build wrote"}},
		{"text as manifest", []string{"image", "build", "--manifest", text, "--out", p("x.img")},
			[]string{"manifest", "hint: see docs/image.md for the manifest's keys"}},
		{"pinned package not fetched", []string{"image", "build", "--manifest", "../../docs/examples/appliance/manifest.toml", "--debs", p("adir"), "--out", p("x.img")},
			[]string{"deb kernel:", "no such file or directory", "hint: the packages the manifest pins are fetched, not built"}},
		{"image over a directory", []string{"image", "build", "--manifest", "../../docs/examples/appliance/manifest.toml", "--debs", p("adir"), "--out", p("adir")},
			[]string{p("adir") + " exists and is not a regular file", "hint: --out, --kernel-out, --initramfs-out and --update-out must be regular files or new paths"}},
		{"manifest not TOML", []string{"image", "measure", "--manifest", text, "--out", p("policy.json")},
			[]string{"manifest: line 1: expected", "hint: see docs/image.md for the manifest's keys"}},
		{"manifest value of the wrong type", []string{"image", "measure", "--manifest", write("m2.toml", "version = \"one\"\n"), "--out", p("policy.json")},
			[]string{`manifest: line 1 (last key "version"): incompatible types`, "hint: see docs/image.md"}},
		{"unknown manifest key", []string{"image", "build", "--manifest", write("m.toml", "version = 1\nbogus = 3\n"), "--out", p("x.img")},
			[]string{`manifest: unknown key "bogus"`, "hint: see docs/image.md for the manifest's keys"}},
	} {
		t.Run(c.name, func(t *testing.T) { checkUserError(t, c) })
	}
}
