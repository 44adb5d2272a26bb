package main

import (
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/smartcard/softhsmtest"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// TestWarrantShowDamagedJSONErrorsInWords: warrant show reads w.json, so
// a damaged or hand-made document reaches the JSON and time decoders;
// the judge reads the cause in words and where it is, never the
// decoders' text, and a byte order mark is named as such.
func TestWarrantShowDamagedJSONErrorsInWords(t *testing.T) {
	dir := t.TempDir()
	doc := string(mustRead(t, newWarrantFile(t, dir)))
	for name, c := range map[string]struct{ data, want string }{
		"truncated": {doc[:200], "ends before its value is complete"},
		"bad time":  {strings.Replace(doc, `"not_before": "`, `"not_before": "x`, 1), "is not an RFC 3339 time"},
		"with BOM":  {"\ufeff" + doc, "byte order mark"},
	} {
		t.Run(name, func(t *testing.T) {
			f := write(t, filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json"), []byte(c.data))
			_, stderr := cli(t, false, "warrant", "show", f)
			if !strings.Contains(stderr, c.want) {
				t.Errorf("want %q in:\n%s", c.want, stderr)
			}
			for _, raw := range []string{"jsontext", "parsing time", "2006-01-02", "offset", "neither a warrant document (JSON)"} {
				if strings.Contains(stderr, raw) {
					t.Errorf("%q in:\n%s", raw, stderr)
				}
			}
		})
	}
}

// TestInputFilesAreReadUnderACap: a file far larger than any warrant,
// certificate or CRL (/dev/zero named by mistake) is refused with what
// to check, not read until memory runs out.
func TestInputFilesAreReadUnderACap(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	for _, args := range [][]string{
		{"warrant", "show", "/dev/zero"},
		{"warrant", "verify", "--in", "/dev/zero", "--roots", "/dev/zero", "--court", "X"},
		{"--data-dir", data, "trust", "add-root", "/dev/zero", "--court", "X"},
		{"--data-dir", data, "trust", "set-crl", "/dev/zero"},
	} {
		_, stderr := cli(t, false, args...)
		if !strings.Contains(stderr, "/dev/zero is larger than") || !strings.Contains(stderr, "right file") {
			t.Errorf("custodian %s:\n%s", strings.Join(args, " "), stderr)
		}
	}
}

// TestWarrantSignHintIsAWholeCommand: the command warrant new and
// warrant show print after the summary runs as printed once the judge's
// module and token label are put in: every required flag is there.
func TestWarrantSignHintIsAWholeCommand(t *testing.T) {
	tok := softhsmtest.New(t, "judge")
	dir := t.TempDir()
	now := time.Now().UTC()
	root := trusttest.NewRoot(t, "Test Court Root", now)
	tok.WriteCertificate(t, root.Judge(t, "Judge Ada", tok.GenerateKey(t, "EC:prime256v1", "SIGN key", "02", false), now), "SIGN key", "02")
	in := newWarrantFile(t, dir)
	shown, _ := cli(t, true, "warrant", "show", in)
	var command string
	for _, line := range strings.Split(shown, "\n") {
		if strings.HasPrefix(line, "  custodian warrant sign ") {
			command = line
		}
	}
	if command == "" {
		t.Fatalf("no sign command in:\n%s", shown)
	}
	command = strings.NewReplacer(`"$M"`, softhsmtest.Module, "<token label>", "judge", "'", "").Replace(command)
	args := strings.Fields(command)[1:]
	t.Setenv("CUSTODIAN_PIN", tok.PIN)
	out, _ := cli(t, true, args...)
	if !strings.Contains(out, "wrote "+strings.TrimSuffix(in, ".json")+".p7s") {
		t.Errorf("the printed command did not write the signed warrant beside w.json:\n%s", out)
	}
}

// TestWarrantMessagesNameTheNextStep: the conversion hint for a PEM
// warrant writes a new file, never over the judge's w.p7s; a certificate
// given to trust set-crl, and a CRL given to trust add-root, are named as
// such, with where they go.
func TestWarrantMessagesNameTheNextStep(t *testing.T) {
	dir := t.TempDir()
	p7sPEM := write(t, filepath.Join(dir, "w.pem"), pem.EncodeToMemory(&pem.Block{Type: "CMS", Bytes: []byte{0x30, 0x00}}))
	_, stderr := cli(t, false, "warrant", "show", p7sPEM)
	if !strings.Contains(stderr, "-out converted.p7s") || strings.Contains(stderr, "-out w.p7s") {
		t.Errorf("conversion hint:\n%s", stderr)
	}
	ca := trusttest.NewRoot(t, "Test Court Root", time.Now())
	root := write(t, filepath.Join(dir, "root.pem"), trusttest.PEM(ca.Cert))
	crl := write(t, filepath.Join(dir, "root.crl.pem"), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: ca.CRL(t, time.Now(), time.Now().Add(time.Hour))}))
	_, stderr = cli(t, false, "--data-dir", filepath.Join(dir, "data"), "trust", "add-root", crl, "--court", "X")
	if !strings.Contains(stderr, "CRL") || !strings.Contains(stderr, "trust set-crl") {
		t.Errorf("add-root given a CRL:\n%s", stderr)
	}
	_, stderr = cli(t, false, "--data-dir", filepath.Join(dir, "data"), "trust", "set-crl", root)
	if !strings.Contains(stderr, "is not a CRL") || !strings.Contains(stderr, "certificate") || !strings.Contains(stderr, "trust add-root") {
		t.Errorf("set-crl given a certificate:\n%s", stderr)
	}
}

// TestWarrantShowReadsASignedWarrantAsDER: a signed warrant is binary
// DER, and a certificate in it may hold PEM text in a name; it is read as
// the signed warrant it is, not taken for a PEM file.
func TestWarrantShowReadsASignedWarrantAsDER(t *testing.T) {
	dir := t.TempDir()
	now := time.Now().UTC()
	root := trusttest.NewRoot(t, "Test Court Root", now)
	key := trusttest.ECKey(t, elliptic.P256())
	judge := root.Judge(t, "Judge Ada", key.Public(), now, func(c *x509.Certificate) {
		c.Subject.OrganizationalUnit = []string{"\n" + string(trusttest.PEM(root.Cert))}
	})
	content := mustRead(t, newWarrantFile(t, dir))
	p7s, err := warrant.Sign(content, []warrant.Signer{{Key: key, Chain: []*x509.Certificate{judge}}}, now)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := cli(t, true, "warrant", "show", write(t, filepath.Join(dir, "w.p7s"), p7s))
	if !strings.Contains(out, "Signed by:  Judge Ada") {
		t.Errorf("the signed warrant was not shown as signed:\n%s", out)
	}
}
