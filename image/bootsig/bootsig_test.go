package bootsig

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"github.com/custodian-project/custodian/tests/need"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var testKey = func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}()

func TestSignParseVerify(t *testing.T) {
	img := []byte("a boot image")
	s, err := Sign(img, 1767225600, "2712", testKey)
	if err != nil {
		t.Fatal(err)
	}
	data := s.Marshal()
	lines := strings.Split(string(data), "\n")
	if len(lines) != 5 || lines[1] != "ts: 1767225600" || lines[2] != "target-soc: 2712" || !strings.HasPrefix(lines[3], "rsa2048: ") || len(lines[3]) != 9+512 {
		t.Fatalf("unexpected boot.sig:\n%s", data)
	}
	p, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(img, &testKey.PublicKey); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(append(img, 0), &testKey.PublicKey); err == nil {
		t.Fatal("verified another boot.img")
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if err := p.Verify(img, &other.PublicKey); err == nil {
		t.Fatal("verified with another key")
	}
	unsigned, _ := Sign(img, 1, "", nil)
	if err := unsigned.Verify(img, &testKey.PublicKey); err == nil {
		t.Fatal("an unsigned boot.sig verified")
	}
}

func TestSignRefusesOtherKeys(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Sign(nil, 0, "", k); err == nil || !strings.Contains(err.Error(), "RSA-2048") {
		t.Fatalf("RSA-3072: %v", err)
	}
	if _, err := Sign(nil, 0, "2713", nil); err == nil {
		t.Fatal("accepted target SoC 2713")
	}
}

func TestParseRefuses(t *testing.T) {
	s, _ := Sign([]byte("x"), 5, "2711", testKey)
	valid := string(s.Marshal())
	for name, bad := range map[string]string{
		"no final newline":    strings.TrimSuffix(valid, "\n"),
		"uppercase digest":    strings.ToUpper(valid[:64]) + valid[64:],
		"ts with plus":        strings.Replace(valid, "ts: 5", "ts: +5", 1),
		"ts leading zero":     strings.Replace(valid, "ts: 5", "ts: 05", 1),
		"unknown soc":         strings.Replace(valid, "2711", "2713", 1),
		"short signature":     strings.Replace(valid, "rsa2048: ", "rsa2048: 00", 1),
		"extra line":          valid + "x\n",
		"CRLF":                strings.ReplaceAll(valid, "\n", "\r\n"),
		"swapped soc and rsa": strings.Join([]string{valid[:64], "ts: 5", valid[strings.Index(valid, "rsa2048") : len(valid)-1], "target-soc: 2711", ""}, "\n"),
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// openssl verifies our signature over boot.img with the public key, the
// way rpi-eeprom-digest -v does (openssl dgst -sha256 -verify).
func TestOpenSSLVerifies(t *testing.T) {
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	img := bytes.Repeat([]byte("boot"), 1000)
	s, err := Sign(img, 1, "", testKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&testKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"boot.img": img,
		"sig.bin":  s.Signature,
		"pub.pem":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(dir, "pub.pem"),
		"-signature", filepath.Join(dir, "sig.bin"), filepath.Join(dir, "boot.img")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verified OK") {
		t.Fatalf("openssl dgst -verify: %v\n%s", err, out)
	}
}

func FuzzParse(f *testing.F) {
	s, _ := Sign([]byte("x"), 1767225600, "2711", testKey)
	f.Add(s.Marshal())
	u, _ := Sign([]byte("x"), 0, "", nil)
	f.Add(u.Marshal())
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		if !bytes.Equal(s.Marshal(), data) {
			t.Fatalf("accepted a non-canonical boot.sig: %q", data)
		}
	})
}
