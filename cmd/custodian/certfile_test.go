package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tests/need"
)

// opensslCAConfig is a court CA as openssl ca runs it, with the
// extensions of a judge's, a TLS server's and an officer's certificate.
const opensslCAConfig = `[ ca ]
default_ca = court
[ court ]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
crlnumber = crlnumber
certificate = root.pem
private_key = root.key
default_md = sha256
default_days = 365
default_crl_days = 7
policy = anything
unique_subject = no
[ anything ]
commonName = supplied
[ judge ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = 1.3.6.1.5.5.7.3.36
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[ officer ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
`

const opensslCourt = "District Court of Testing"

// opensslPKI is a court PKI made by openssl: files as openssl ca and
// openssl x509/crl -text write them, explanatory text before each block.
type opensslPKI struct {
	dir string
	// RootText and CRLText are root.pem and crl.pem with openssl's text
	// before the block; JudgeChain is judge.pem (from openssl ca) followed
	// by RootText; CRLChain is CRLText followed by RootText.
	Root, RootText, CRLText, Judge, JudgeKey, JudgeChain, CRLChain, Server, ServerKey, Officer, OfficerKey string
}

func newOpenSSLPKI(t *testing.T) *opensslPKI {
	t.Helper()
	need.Command(t, "openssl", "openssl")
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	write(t, p("ca.cnf"), []byte(opensslCAConfig))
	write(t, p("index.txt"), nil)
	write(t, p("serial"), []byte("01\n"))
	write(t, p("crlnumber"), []byte("01\n"))
	run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root.key",
		"-subj", "/CN=District Court Root", "-days", "3650",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root.pem")
	for _, n := range []string{"judge", "server", "officer"} {
		run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", n+".key",
			"-subj", "/CN=Test "+n, "-out", n+".csr")
		run("ca", "-batch", "-config", "ca.cnf", "-extensions", n, "-in", n+".csr", "-out", n+".pem")
		if err := os.Chmod(p(n+".key"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run("ca", "-gencrl", "-config", "ca.cnf", "-out", "crl.pem")
	run("crl", "-in", "crl.pem", "-text", "-out", "crl-text.pem")
	run("x509", "-in", "root.pem", "-text", "-out", "root-text.pem")
	k := &opensslPKI{dir: dir, Root: p("root.pem"), RootText: p("root-text.pem"), CRLText: p("crl-text.pem"),
		Judge: p("judge.pem"), JudgeKey: p("judge.key"), JudgeChain: p("judge-chain.pem"), CRLChain: p("crl-chain.pem"),
		Server: p("server.pem"), ServerKey: p("server.key"), Officer: p("officer.pem"), OfficerKey: p("officer.key")}
	for _, f := range []string{k.RootText, k.CRLText, k.Judge, k.Server, k.Officer} {
		if data := mustRead(t, f); bytes.HasPrefix(data, []byte("-----")) {
			t.Fatalf("%s: openssl wrote no text before the PEM block", filepath.Base(f))
		}
	}
	write(t, k.JudgeChain, append(mustRead(t, k.Judge), mustRead(t, k.RootText)...))
	write(t, k.CRLChain, append(mustRead(t, k.CRLText), mustRead(t, k.RootText)...))
	return k
}

// signedWarrant writes a warrant for court-a signed with the openssl
// judge's key and chain (read as warrant sign --cert reads it).
func (k *opensslPKI) signedWarrant(t *testing.T) string {
	t.Helper()
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	w := &warrant.Warrant{Version: 1, Serial: "W-7468", Docket: "CR-1/2026", Court: opensslCourt, Agency: "Test Police",
		Official: "Inspector Morse", Offence: "fraud", Targets: []string{"alice@example.org"},
		NotBefore: now.Add(-time.Hour).Format(time.RFC3339), NotAfter: now.Add(time.Hour).Format(time.RFC3339),
		KeyIDs: []string{"2026-11"}, Custodians: []string{"court-a"}, Recipient: agency.Public().String()}
	content, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	return k.sign(t, content, filepath.Join(k.dir, "w.p7s"))
}

// sign signs content as the openssl judge and writes it to out.
func (k *opensslPKI) sign(t *testing.T, content []byte, out string) string {
	t.Helper()
	chain, err := readChain(k.JudgeChain)
	if err != nil {
		t.Fatalf("warrant sign --cert with openssl ca's output: %v", err)
	}
	if len(chain) != 2 {
		t.Fatalf("judge chain of %d certificates, want 2", len(chain))
	}
	block, _ := pem.Decode(mustRead(t, k.JudgeKey))
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	p7s, err := warrant.Sign(content, []warrant.Signer{{Key: key.(crypto.Signer), Chain: chain}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return write(t, out, p7s)
}

// TestPEMWithExplanatoryTextAcceptedEverywhere: every place a certificate
// or CRL file is read takes the files a court CA run with openssl ca
// hands out, text before each PEM block (RFC 7468 section 5.2).
func TestPEMWithExplanatoryTextAcceptedEverywhere(t *testing.T) {
	k := newOpenSSLPKI(t)
	data := filepath.Join(k.dir, "data")
	w := k.signedWarrant(t) // the judge's chain: warrant sign --cert

	t.Run("court root: trust add-root", func(t *testing.T) {
		cli(t, true, "--data-dir", data, "trust", "add-root", k.RootText, "--court", opensslCourt)
	})
	t.Run("CRL with its issuer appended: trust set-crl", func(t *testing.T) {
		cli(t, true, "--data-dir", data, "trust", "set-crl", k.CRLChain)
	})
	t.Run("trust store: warrant verify", func(t *testing.T) {
		if out, _ := cli(t, true, "--data-dir", data, "warrant", "verify", "--in", w, "--custodian", "court-a", "--key-id", "2026-11"); !strings.Contains(out, "VERIFIED for custodian court-a") {
			t.Errorf("stdout: %s", out)
		}
	})
	t.Run("roots and CRL: warrant verify --roots --crl", func(t *testing.T) {
		for _, crl := range []string{k.CRLText, k.CRLChain} {
			cli(t, true, "warrant", "verify", "--in", w, "--roots", k.RootText, "--court", opensslCourt, "--crl", crl)
		}
	})
	t.Run("TLS certificate and officers' CA: serve --tls-cert --client-ca", func(t *testing.T) {
		s := &serverTLS{cert: k.Server, key: k.ServerKey, clientCA: k.RootText}
		if _, officers, err := s.load(time.Now()); err != nil || officers == nil {
			t.Fatalf("serve: %v", err)
		}
	})
	t.Run("server CA and client certificate: --ca --client-cert", func(t *testing.T) {
		g := &globals{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		c, err := g.apiClient("https://localhost:8443", clientTLS{ca: k.RootText, cert: k.Officer, key: k.OfficerKey})
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.http.Transport.(*http.Transport).TLSClientConfig
		if cfg == nil || cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.Certificates[0].Leaf.Subject.CommonName != "Test officer" {
			t.Fatalf("the client's TLS configuration lacks the CA or the officer's certificate: %+v", cfg)
		}
	})
	t.Run("EK roots: enroll --ek-roots", func(t *testing.T) {
		pool, err := readCertPool(k.RootText)
		if err != nil {
			t.Fatal(err)
		}
		judge, err := readCertificates(k.Judge)
		if err != nil {
			t.Fatal(err)
		}
		// The pool holds the root: the judge's certificate chains to it.
		if _, err := judge[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("the pool read from openssl's text output lacks the root: %v", err)
		}
	})
}

// opensslFingerprint is openssl x509 -fingerprint -sha256's value for a
// certificate file.
func opensslFingerprint(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256").Output()
	if err != nil {
		t.Fatal(err)
	}
	_, fp, ok := strings.Cut(strings.TrimSpace(string(out)), "Fingerprint=")
	if !ok || len(fp) != 95 {
		t.Fatalf("openssl printed %q", out)
	}
	return fp
}

// TestFingerprintsMatchOpenSSL: wherever a certificate fingerprint is
// printed (trust add-root, trust list, warrant show and verify of the
// signer), openssl's form is printed beside the project's, and both are
// the digest openssl x509 -fingerprint -sha256 prints.
func TestFingerprintsMatchOpenSSL(t *testing.T) {
	k := newOpenSSLPKI(t)
	data := filepath.Join(k.dir, "data")
	w := k.signedWarrant(t)
	both := func(path string) string {
		fp := opensslFingerprint(t, path)
		return "sha256 " + strings.ToLower(strings.ReplaceAll(fp, ":", "")) + " (openssl " + fp + ")"
	}
	root, judge := both(k.Root), both(k.Judge)
	added, _ := cli(t, true, "--data-dir", data, "trust", "add-root", k.RootText, "--court", opensslCourt)
	cli(t, true, "--data-dir", data, "trust", "set-crl", k.CRLChain)
	listed, _ := cli(t, true, "--data-dir", data, "trust", "list")
	listedJSON, _ := cli(t, true, "--data-dir", data, "--json", "trust", "list")
	shown, _ := cli(t, true, "warrant", "show", w)
	verified, _ := cli(t, true, "--data-dir", data, "warrant", "verify", "--in", w)
	for name, c := range map[string]struct{ out, want string }{
		"trust add-root":          {added, root},
		"trust list":              {listed, root},
		"trust list --json":       {listedJSON, `"sha256_openssl": "` + opensslFingerprint(t, k.Root) + `"`},
		"warrant show (signer)":   {shown, "Certificate Test judge: " + judge},
		"warrant verify (signer)": {verified, "Certificate Test judge: " + judge},
	} {
		if !strings.Contains(c.out, c.want) {
			t.Errorf("%s does not print %q:\n%s", name, c.want, c.out)
		}
	}
}
