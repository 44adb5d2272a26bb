package main

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/update"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image/bootsig"
	"github.com/custodian-project/custodian/image/imagetest"
	"github.com/custodian-project/custodian/tests/need"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// Where the default layout's partitions start: after 1 MiB of GPT gap the
// 8 MiB autoboot partition, boot A and boot B (24 MiB each), then root A.
const (
	bootPartitionOffset = 9 << 20
	rootPartitionOffset = 57 << 20
)

// extractRoot unpacks the built image's squashfs root filesystem with
// Debian's unsquashfs: measure-boot then measures exactly what a device
// booting this image would mount.
func extractRoot(t *testing.T, img string) string {
	t.Helper()
	need.Command(t, "unsquashfs", "squashfs-tools")
	dir := filepath.Join(t.TempDir(), "root")
	out, err := exec.Command("unsquashfs", "-no-xattrs", "-o", strconv.Itoa(rootPartitionOffset), "-d", dir, img).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	return dir
}

// extractBootManifest copies the manifest out of the image's boot.img
// with mtools, as the early init finds it on the device.
func extractBootManifest(t *testing.T, img string) string {
	t.Helper()
	need.Command(t, "mcopy", "mtools")
	dir := t.TempDir()
	bootImg, manifest := filepath.Join(dir, "boot.img"), filepath.Join(dir, "custodian.toml")
	for _, args := range [][]string{
		{"-i", img + "@@" + strconv.Itoa(bootPartitionOffset), "::boot.img", bootImg},
		{"-i", bootImg, "::custodian.toml", manifest},
	} {
		if out, err := exec.Command("mcopy", args...).CombinedOutput(); err != nil {
			t.Fatalf("mcopy %v: %v\n%s", args, err, out)
		}
	}
	return manifest
}

func mustReadPolicy(t *testing.T, file string) *bootpolicy.Policy {
	t.Helper()
	p, err := readPolicy(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMeasureBootMatchesPrediction is the image story on swtpm: build an
// image, predict its policy, measure the image's root filesystem into the
// TPM as the early init does. The PCRs equal the prediction, the event
// log replays to them and lists the predicted events, and a share sealed
// to the policy opens. A second run in the same boot is refused. Then
// for a one-byte change to the binary, the configuration and a trust root,
// the prediction changes and, after a reboot into the changed image, the
// share sealed to the old policy no longer opens.
func TestMeasureBootMatchesPrediction(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	manifest := imagetest.Write(t)
	img, policyFile := filepath.Join(dir, "custodian.img"), filepath.Join(dir, "policy.json")
	code, _, errOut := custodian(t, "image", "build", "--manifest", manifest, "--out", img)
	// Not a terminal: no progress bar, only the warning about the unsigned boot.img.
	if code != 0 || strings.Contains(errOut, "\r") || !strings.Contains(errOut, "boot.img is unsigned") {
		t.Fatalf("image build: exit %d, stderr %q", code, errOut)
	}
	mustRun(t, "image", "measure", "--manifest", manifest, "--out", policyFile)
	policy := mustReadPolicy(t, policyFile)
	fromImage := filepath.Join(dir, "policy-from-image.json")
	mustRun(t, "image", "measure", "--image", img, "--out", fromImage)
	if a, b := readFile(t, policyFile), readFile(t, fromImage); !bytes.Equal(a, b) {
		t.Fatalf("image measure --image differs from --manifest:\n%s\n%s", b, a)
	}
	root := extractRoot(t, img)
	bootManifest := extractBootManifest(t, img)

	runDir := filepath.Join(dir, "run")
	device := []string{"--tpm", sw.Spec(), "measure-boot", "--manifest", bootManifest, "--root", root}
	mustRun(t, append(device, "--run-dir", runDir)...)
	// swtpm serves one connection at a time: hold one only between runs
	// of the command line.
	conn := openTPM(t, sw)
	pcrs, err := tpm.ReadPCRs(conn, policy.PCRs.Indices()...)
	if err != nil {
		t.Fatal(err)
	}
	if !pcrs.Equal(policy.PCRs) {
		t.Fatalf("PCRs after measure-boot differ from the prediction:\ngot  %v\nwant %v", pcrs, policy.PCRs)
	}
	log, err := os.ReadFile(filepath.Join(runDir, measure.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.VerifyLog(log, pcrs); err != nil {
		t.Fatal(err)
	}

	_, importKey := tpmtest.ProvisionKeys(t, conn)
	if floor := tpmtest.Floor(t, conn); floor > policy.SecurityVersion {
		t.Fatalf("a fresh TPM's floor is %d", floor)
	}
	share := []byte("share sealed to the approved image")
	blob, err := tpm.Seal(importKey, policy.PCRs, policy.SecurityVersion, share)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tpm.Unseal(conn, blob); err != nil || !bytes.Equal(got, share) {
		t.Fatalf("unseal on the approved image: %q, %v", got, err)
	}
	conn.Close()

	t.Run("twice", func(t *testing.T) {
		code, _, errOut := custodian(t, append(device, "--run-dir", runDir)...)
		if code == 0 || !strings.Contains(errOut, "already measured") {
			t.Fatalf("second measure-boot: exit %d, %s", code, errOut)
		}
		// With the marker gone (root can delete it), the PCRs still tell.
		code, _, errOut = custodian(t, append(device, "--run-dir", filepath.Join(dir, "run2"))...)
		if code == 0 || !strings.Contains(errOut, "is not zero") {
			t.Fatalf("measure-boot with a fresh run dir: exit %d, %s", code, errOut)
		}
	})

	for _, file := range []string{"usr/bin/custodian", "etc/custodian/config.toml", "etc/custodian/trust/court-b.pem"} {
		t.Run(file, func(t *testing.T) {
			flipByte(t, filepath.Join(filepath.Dir(manifest), "rootfs", file))
			flipByte(t, filepath.Join(root, file))
			changed := filepath.Join(t.TempDir(), "policy.json")
			mustRun(t, "image", "measure", "--manifest", manifest, "--out", changed)
			newPolicy := mustReadPolicy(t, changed)
			if newPolicy.PCRs.Equal(policy.PCRs) {
				t.Fatal("the prediction did not change")
			}
			conn := openTPM(t, sw)
			sw.PowerCycle(t, conn)
			conn.Close()
			mustRun(t, append(device, "--run-dir", filepath.Join(t.TempDir(), "run"))...)
			conn = openTPM(t, sw)
			defer conn.Close()
			pcrs, err := tpm.ReadPCRs(conn, newPolicy.PCRs.Indices()...)
			if err != nil {
				t.Fatal(err)
			}
			if !pcrs.Equal(newPolicy.PCRs) {
				t.Fatal("PCRs after measuring the changed root differ from its prediction")
			}
			if _, err := tpm.Unseal(conn, blob); !errors.Is(err, tpm.ErrPCRMismatch) {
				t.Fatalf("unseal on the changed image: %v, want ErrPCRMismatch", err)
			}
			// Put the byte back for the next case.
			flipByte(t, filepath.Join(filepath.Dir(manifest), "rootfs", file))
			flipByte(t, filepath.Join(root, file))
		})
	}
}

func openTPM(t *testing.T, sw *tpmtest.Swtpm) transport.TPMCloser {
	t.Helper()
	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func readFile(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func flipByte(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1
	info, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, info.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

// image measure refuses a manifest whose separator does not close a
// measured PCR, and measure-boot refuses it too (same check).
func TestImageMeasureRejectsUncoveredPCR(t *testing.T) {
	manifest := imagetest.Write(t)
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, "\n[measure]\nconfig_pcr = 13\nseparator_pcrs = [8, 9, 11, 12]\n"...)
	if err := os.WriteFile(manifest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "policy.json")
	code, _, errOut := custodian(t, "image", "measure", "--manifest", manifest, "--out", out)
	if code == 0 || !strings.Contains(errOut, "separator does not cover") || !strings.Contains(errOut, "PCR 13") {
		t.Fatalf("exit %d, %s", code, errOut)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Error("a policy was written")
	}
	code, _, errOut = custodian(t, "--tpm", "swtpm:127.0.0.1:1", "measure-boot", "--manifest", manifest, "--root", t.TempDir(), "--run-dir", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "separator does not cover") {
		t.Fatalf("measure-boot: exit %d, %s", code, errOut)
	}
}

// Outputs that are not regular files are refused, not replaced.
func TestImageRefusesNonRegularOut(t *testing.T) {
	manifest := imagetest.Write(t)
	for _, args := range [][]string{
		{"image", "build", "--manifest", manifest, "--out", "/dev/null"},
		{"image", "measure", "--manifest", manifest, "--out", "/dev/null"},
		{"image", "build", "--manifest", manifest, "--out", t.TempDir()},
	} {
		code, _, errOut := custodian(t, args...)
		if code == 0 || !strings.Contains(errOut, "not a regular file") {
			t.Errorf("%v: exit %d, %s", args, code, errOut)
		}
	}
	if info, err := os.Stat("/dev/null"); err != nil || info.Mode()&os.ModeDevice == 0 {
		t.Fatalf("/dev/null was replaced: %v %v", info, err)
	}
}

// image sign reads keys as openssl writes them (PKCS#8 and, with
// -traditional, PKCS#1) and writes a boot.sig that verifies; build --key
// signs the image's boot.img the same way. Keys that are not RSA-2048 are
// refused with advice.
func TestImageSign(t *testing.T) {
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	img := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(img, []byte("boot image bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"genrsa"}, {"genrsa", "-traditional"}} {
		key := filepath.Join(t.TempDir(), "boot-key.pem")
		out, err := exec.Command("openssl", append(args, "-out", key, "2048")...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		sigFile := filepath.Join(t.TempDir(), "boot.sig")
		mustRun(t, "image", "sign", "--in", img, "--key", key, "--out", sigFile, "--ts", "1767225600", "--target-soc", "2712")
		data, err := os.ReadFile(sigFile)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := bootsig.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := loadBootKey(key)
		if err != nil {
			t.Fatal(err)
		}
		imgData, _ := os.ReadFile(img)
		if err := sig.Verify(imgData, signer.Public().(*rsa.PublicKey)); err != nil {
			t.Fatal(err)
		}
	}
	big := filepath.Join(dir, "big.pem")
	if out, err := exec.Command("openssl", "genrsa", "-out", big, "3072").CombinedOutput(); err != nil {
		t.Fatalf("openssl genrsa: %v\n%s", err, out)
	}
	code, _, errOut := custodian(t, "image", "sign", "--in", img, "--key", big, "--out", filepath.Join(dir, "x.sig"))
	if code == 0 || !strings.Contains(errOut, "not an RSA-2048 key") || !strings.Contains(errOut, "hint: make a key with: openssl genrsa") {
		t.Fatalf("RSA-3072 key: exit %d, %s", code, errOut)
	}
}

// Each build refusal's hint names its cause: an output path for --out
// errors only, the manifest key for a missing boot file or a small size,
// and the pinned package for a digest mismatch.
func TestImageBuildHintsNameTheCause(t *testing.T) {
	manifest := imagetest.Write(t)
	if err := os.WriteFile(filepath.Join(filepath.Dir(manifest), "k.deb"), []byte("not the pinned package"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := imagetest.Manifest
	pinned := "[[debs]]\nname = \"k\"\nfile = \"k.deb\"\nsha256 = \"" + strings.Repeat("0", 64) + "\"\n"
	out := filepath.Join(t.TempDir(), "x.img")
	for _, c := range []struct{ name, text, want string }{
		{"no kernel", strings.Replace(m, `  { src = "boot/kernel8.img", dst = "kernel8.img" },`+"\n", "", 1),
			`hint: add it to the manifest's boot.files, e.g. { src = "deb:kernel:/path/in/package", dst = "kernel8.img" }`},
		{"small image", strings.Replace(m, "version = 1\n", "version = 1\nimage_mib = 100\n", 1),
			"hint: raise image_mib to at least 180 in the manifest"},
		{"wrong digest", strings.Replace(m, `"boot/kernel8.img"`, `"deb:k:/boot/vmlinuz"`, 1) + pinned,
			"hint: this is not the package the manifest pins"},
	} {
		if err := os.WriteFile(manifest, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := custodian(t, "image", "build", "--manifest", manifest, "--out", out)
		if code == 0 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "--out") {
			t.Errorf("%s: exit %d, stderr %s", c.name, code, errOut)
		}
	}
}

// image build --update-out writes the update file beside the image, and
// says so in its JSON report; the file is gzip and far smaller than the
// image.
func TestImageBuildWritesTheUpdateFile(t *testing.T) {
	dir := t.TempDir()
	img, upd := filepath.Join(dir, "custodian.img"), filepath.Join(dir, "custodian.update")
	code, out, errOut := custodian(t, "--json", "image", "build", "--manifest", imagetest.Write(t), "--out", img, "--update-out", upd)
	if code != 0 {
		t.Fatalf("image build: exit %d, stderr %q", code, errOut)
	}
	var report struct {
		Bytes       int64  `json:"bytes"`
		Update      string `json:"update"`
		UpdateBytes int64  `json:"update_bytes"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("%v: %q", err, out)
	}
	head := readFile(t, upd)
	if report.Update != upd || report.UpdateBytes != int64(len(head)) || report.UpdateBytes*4 > report.Bytes || !update.IsCompressed(head) {
		t.Fatalf("report %+v; the update file is %d bytes, gzip %v", report, len(head), update.IsCompressed(head))
	}
}
