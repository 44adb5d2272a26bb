package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// custodian runs the command line in-process and returns its exit status
// and output.
func custodian(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := custodian(t, args...)
	if code != 0 {
		t.Fatalf("custodian %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// TestEnrollChallengeVerifyOnSwtpm runs the enrollment exchange through the
// command line, as an operator and a verifier would.
func TestEnrollChallengeVerifyOnSwtpm(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	first := filepath.Join(dir, "request.json")
	final := filepath.Join(dir, "enrollment.json")
	challenge := filepath.Join(dir, "challenge.json")
	secret := filepath.Join(dir, "challenge.secret")
	roots := filepath.Join(dir, "ek-ca.pem")
	writeSwtpmRoots(t, sw, roots)
	device := []string{"--tpm", sw.Spec(), "--data-dir", data}

	mustRun(t, append(device, "enroll", "--id", "court-a", "--out", first)...)
	mustRun(t, "enroll", "challenge", "--in", first, "--out", challenge, "--secret-out", secret)
	if info, err := os.Stat(secret); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v", info, err)
	}
	mustRun(t, append(device, "enroll", "--id", "court-a", "--challenge", challenge, "--out", final)...)

	out := mustRun(t, "--json", "enroll", "verify", "--in", final, "--secret", secret, "--ek-roots", roots)
	var result struct {
		Verified    bool `json:"verified"`
		EKCertified bool `json:"ek_certified"`
		AKBound     bool `json:"ak_bound"`
	}
	if err := json.Unmarshal([]byte(out), &result); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if !result.Verified || !result.EKCertified || !result.AKBound {
		t.Fatalf("verify reported %s", out)
	}
	if _, err := os.Stat(filepath.Join(data, "enrollment.json")); err != nil {
		t.Fatalf("the device kept no copy of its enrollment: %v", err)
	}

	// The first enrollment answered no challenge: it must not verify.
	code, _, errOut := custodian(t, "enroll", "verify", "--in", first, "--secret", secret, "--ek-roots", roots)
	if code == 0 || !strings.Contains(errOut, "custodian: error: ") || !strings.Contains(errOut, "hint: ") {
		t.Fatalf("unanswered enrollment: exit %d, stderr %q", code, errOut)
	}
	// A second challenge may not overwrite the kept secret.
	code, _, errOut = custodian(t, "enroll", "challenge", "--in", first, "--out", challenge, "--secret-out", secret)
	if code == 0 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("overwrote a kept secret: exit %d, %q", code, errOut)
	}
}

func writeSwtpmRoots(t *testing.T, sw *tpmtest.Swtpm, path string) {
	t.Helper()
	var pem []byte
	for _, name := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		data, err := os.ReadFile(filepath.Join(sw.Dir, "ca", name))
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, data...)
	}
	if err := os.WriteFile(path, pem, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsGoToStderrWithHints(t *testing.T) {
	for name, c := range map[string]struct {
		args []string
		want []string
	}{
		"missing device":  {[]string{"--tpm", "/nonexistent/tpm0", "enroll", "--id", "a", "--out", "x"}, []string{"custodian: error: ", "hint: "}},
		"unknown spec":    {[]string{"--tpm", "tpm0", "enroll", "--id", "a", "--out", "x"}, []string{"custodian: error: unknown TPM"}},
		"bad id":          {[]string{"--tpm", "sim", "--data-dir", t.TempDir(), "enroll", "--id", "Court A", "--out", filepath.Join(t.TempDir(), "e.json")}, []string{"custodian ID"}},
		"missing flag":    {[]string{"enroll", "--id", "a"}, []string{`"out" not set`}},
		"unknown command": {[]string{"frobnicate"}, []string{"unknown command"}},
		"bad enrollment":  {[]string{"enroll", "verify", "--in", writeTemp(t, `{"version":1,"version":1}`)}, []string{"duplicate key"}},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := custodian(t, c.args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", out)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCompletionIsGenerated(t *testing.T) {
	out := mustRun(t, "completion", "bash")
	if !strings.Contains(out, "custodian") || len(out) < 1000 {
		t.Fatalf("completion script looks wrong: %d bytes", len(out))
	}
}
