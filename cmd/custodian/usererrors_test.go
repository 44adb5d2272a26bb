package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// userError is one failure a person can cause from the command line, with
// the words the output must hold: what went wrong and what to do next.
type userError struct {
	name string
	args []string
	want []string // each must appear in stderr
}

// goInternals are what a message for a person never holds: Go values,
// Go identifiers and raw decoder text.
var goInternals = []*regexp.Regexp{
	regexp.MustCompile(`map\[`),
	regexp.MustCompile(`&\{`),
	regexp.MustCompile(`%!`),
	regexp.MustCompile(`0x[0-9a-f]{8,}`),
	regexp.MustCompile(`\*[a-z0-9]+\.[A-Za-z]`), // *errors.errorString, *fs.PathError
	regexp.MustCompile(`\b(escrow|ledger|warrant|trust|tpm|tpm2|appliance|enrollment|recipient|release|strictjson|jsontext|bootpolicy|builder|image|ids|durable|attest|smartcard|errors|fmt|os|fs|x509|asn1|json|http|url|net|bolt|cobra)\.[A-Z]\w*`),
	regexp.MustCompile(`\b[A-Z][a-z]+[A-Z][a-z0-9]+[A-Za-z0-9]*\b`), // OpenScoped, ContentInfo
	regexp.MustCompile(`json: cannot unmarshal`),
	regexp.MustCompile(`jsontext:|asn1:|toml:|strconv\.|\{optional:`),
	regexp.MustCompile(`(^|error: |: )unexpected EOF\n`),
	regexp.MustCompile(`dial (tcp|udp|unix)`),
	regexp.MustCompile(`2006-01-02T15:04:05`), // a Go time layout
}

// tempDirs matches the test's temporary directories in the output.
var tempDirs = regexp.MustCompile(regexp.QuoteMeta(os.TempDir()) + `/Test\w+/\d+`)

// checkUserError runs c and checks that it fails once, in words a person
// can act on.
func checkUserError(t *testing.T, c userError) {
	t.Helper()
	code, out, errOut := custodian(t, c.args...)
	if code == 0 {
		t.Fatalf("exit 0\nstdout: %s\nstderr: %s", out, errOut)
	}
	if !strings.HasPrefix(errOut, "custodian: error: ") && !strings.Contains(errOut, "\ncustodian: error: ") || strings.Count(errOut, "custodian: error: ") != 1 {
		t.Errorf("stderr is not one error line (with hints):\n%s", errOut)
	}
	for _, w := range c.want {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
	// The test's temporary directories are named after the test.
	shown := tempDirs.ReplaceAllString(out+errOut, "DIR")
	for _, re := range goInternals {
		if m := re.FindString(shown); m != "" {
			t.Errorf("the output holds Go internals (%q, matched by %s):\n%s%s", m, re, out, errOut)
		}
	}
}

// TestEveryUserErrorNamesCauseAndNextStep runs each command's common
// failures (missing files, directories and files of the wrong kind where a
// file goes, wrong keys, bad flags, an unreachable server, a server whose
// CA is not pinned) and checks each says what went wrong and what to do,
// with no Go value, identifier or decoder text in the output. Files this
// user may not read are not among them: the tests may run as root, which
// reads everything.
func TestEveryUserErrorNamesCauseAndNextStep(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	write := func(name, content string) string {
		if err := os.WriteFile(p(name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p(name)
	}
	missing, empty, text := p("missing.json"), write("empty", ""), write("text.txt", "hello\n")
	os.Mkdir(p("adir"), 0o755)
	now := time.Now()
	root := trusttest.NewRoot(t, "Court Root", now)
	cert := write("cert.pem", string(trusttest.PEM(root.Cert)))
	crl := write("crl.pem", string(trusttest.CRLPEM(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)))))
	batch := newScopedBatch(t, 1)
	envelope := filepath.Join(batch.envDir, batch.names[0]+".env")
	oneRelease := batch.release(t, 0, "")
	agencyPub := filepath.Join(batch.dir, "agency.pub")
	unsigned := p("w.json")
	mustRun(t, "warrant", "new", "--serial", "S-1", "--docket", "D-1", "--court", "Test Court", "--agency", "A", "--official", "O",
		"--offence", "X", "--target", "alice@example.org", "--key-id", "2026-11", "--custodian", "court-a", "--recipient", agencyPub,
		"--not-before", now.UTC().Format(time.RFC3339), "--not-after", now.Add(24*time.Hour).UTC().Format(time.RFC3339), "--out", unsigned)
	warrantFlags := func(custodian, notBefore string) []string {
		return []string{"warrant", "new", "--serial", "S-2", "--docket", "D", "--court", "C", "--agency", "A", "--official", "O", "--offence", "X",
			"--target", "T", "--key-id", "2026-11", "--custodian", custodian, "--recipient", agencyPub,
			"--not-before", notBefore, "--not-after", "2026-01-02T00:00:00Z", "--out", p("w2.json")}
	}
	nowArg := now.UTC().Format(time.RFC3339)
	warrantWith := func(extra ...string) []string {
		return append(warrantFlags("court-a", nowArg), extra...)
	}
	unpinned := httptest.NewTLSServer(http.NotFoundHandler())
	defer unpinned.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	dev := []string{"--tpm", "swtpm:127.0.0.1:1", "--data-dir", p("data")}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	_, verifierKey, err := note.GenerateKey(rand.Reader, "custodian/court-a")
	if err != nil {
		t.Fatal(err)
	}
	saltsFile := write("w.salts.json", fmt.Sprintf(`{"version":1,"server":"https://c.example","warrant_digest":"%s","salts":[{"index":3,"salt":"%s"}]}`,
		strings.Repeat("ab", 32), strings.Repeat("01", 32)))
	keyFile := p("other.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	_, monitorKey, err := note.GenerateKey(rand.Reader, "custodian/court-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []userError{
		// Files that are not there, or not files.
		{"missing input", []string{"escrow", "seal", "--escrow", missing, "--target", "t", "--in", text, "--out", p("o.env")},
			[]string{"no such file or directory", "hint: check the name: there is no " + missing}},
		{"directory as input", []string{"recover", "--identity", batch.identity, "--escrow", p("adir"), "--release", oneRelease, "--out", p("k")},
			[]string{"is a directory", "hint: " + p("adir") + " is a directory: give the file in it"}},
		{"output in a missing directory", []string{"agency", "keygen", "--out", p("nodir/a.key"), "--pub", p("nodir/a.pub")},
			[]string{"no such file or directory", "hint: check the name: there is no directory " + p("nodir")}},
		{"file as data directory", []string{"--data-dir", text, "trust", "list"},
			[]string{"not a directory", "hint: a name in " + text}},
		{"text as signed warrant", []string{"warrant", "show", "--in", text},
			[]string{"is neither a warrant document (JSON) nor a signed warrant (CMS)", "hint: give the w.json custodian warrant new wrote, or the w.p7s custodian warrant sign wrote"}},
		{"output exists", []string{"agency", "keygen", "--out", batch.identity, "--pub", p("new.pub")},
			[]string{"already exists", "hint: remove it first or choose another --out"}},
		{"public key output exists", []string{"agency", "keygen", "--out", p("new.key"), "--pub", agencyPub},
			[]string{"already exists", "hint: remove it first or choose another --pub"}},
		{"update verifier output exists", []string{"update", "keygen", "--name", "u", "--out", p("u2.key"), "--pub", agencyPub},
			[]string{"already exists", "hint: remove it first or choose another --pub"}},

		// Files of the wrong kind.
		{"certificate as escrow file", []string{"escrow", "seal", "--escrow", cert, "--target", "t", "--in", text, "--out", p("o.env")},
			[]string{"--escrow " + cert + " is not an escrow file (escrow-K.pub.json, from custodian ceremony): it is a PEM certificate", "hint: check that --escrow names the right file"}},
		{"empty escrow file", []string{"recover", "--identity", batch.identity, "--escrow", empty, "--release", oneRelease, "--out", p("k")},
			[]string{"is not an escrow file", "the file is empty"}},
		{"public key as identity", []string{"recover", "--identity", agencyPub, "--escrow", batch.escrowFile, "--release", oneRelease, "--out", p("k")},
			[]string{"not a CUSTODIAN-IDENTITY-V1 key", "hint: "}},
		{"text as enrollment", []string{"enroll", "verify", "--in", text},
			[]string{"--in " + text + " is not an enrollment (enrollment.json, from custodian enroll): it is not JSON", "hint: check that --in names the right file"}},
		{"warrant as enrollment", []string{"enroll", "challenge", "--in", unsigned, "--out", p("c.json"), "--secret-out", p("c.secret")},
			[]string{"--in " + unsigned + ":", "hint: "}},
		{"key as policy", []string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--policy", agencyPub, "--enrollment", text, "--out", p("cer")},
			[]string{"--policy " + agencyPub + " is not a boot policy (policy.json, from custodian image measure): it is an agency public key", "hint: check that --policy names the right file"}},
		{"warrant as policy", []string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--policy", unsigned, "--enrollment", text, "--out", p("cer")},
			[]string{"--policy " + unsigned + ": it is a warrant document (w.json, from custodian warrant new), not a boot policy", "hint: --policy takes a boot policy"}},
		{"witnesses without a quorum", []string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--policy", text, "--enrollment", text, "--out", p("cer"),
			"--witness-key", "w.test/a+01234567+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "--witness-url", "http://127.0.0.1:7380"},
			[]string{"witnesses without --witness-quorum", "hint: say how many of them must cosign"}},
		{"witness key without its URL", []string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--policy", text, "--enrollment", text, "--out", p("cer"),
			"--witness-key", "w.test/a+01234567+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "--witness-quorum", "1"},
			[]string{"1 --witness-key and 0 --witness-url", "hint: give --witness-url right after each --witness-key"}},
		{"witness key that is not one", []string{"ceremony", "--key-id", "2026-11", "--threshold", "2", "--policy", text, "--enrollment", text, "--out", p("cer"),
			"--witness-key", "w.test/a+01234567+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "--witness-url", "http://127.0.0.1:7380", "--witness-quorum", "1"},
			[]string{"does not match its hash", "hint: --witness-key takes the witness's cosignature verifier key"}},
		{"monitor with an escrow file naming no witnesses", []string{"monitor", "--once", "--appliance", "https://127.0.0.1:1", "--verifier-key", monitorKey, "--state", p("mon"), "--escrow", batch.escrowFile},
			[]string{"names no witnesses", "hint: give the escrow file of a key ID whose escrow authority names witnesses"}},
		{"escrow file as release package", []string{"recover", "--identity", batch.identity, "--escrow", batch.escrowFile, "--release", batch.escrowFile, "--out", p("k")},
			[]string{"--release " + batch.escrowFile + ": it is an escrow file (escrow-K.pub.json, from custodian ceremony), not a release package", "hint: --release takes a release package"}},
		{"verify away from a device without roots", []string{"--data-dir", p("nodata"), "warrant", "verify", "--in", unsigned},
			[]string{"there is no data directory " + p("nodata"), `hint: away from a device, pass --roots FILE --court "NAME" --crl FILE`}},
		{"escrow file as release", []string{"recover", "--identity", batch.identity, "--escrow", batch.escrowFile, "--release", cert, "--out", p("k")},
			[]string{"--release " + cert + " is not a release package", "hint: check that --release names the right file"}},
		{"certificate as attestation", []string{"attest", "verify", "--enrollment", text, "--policy", text, "--nonce", "0011223344556677", "--in", cert, "--ledger-key", text},
			[]string{"--enrollment " + text + " is not an enrollment", "hint: "}},
		{"unsigned warrant released", []string{"release", "--server", "https://127.0.0.1:1", "--warrant", unsigned, "--out", p("r.json")},
			[]string{"this is JSON, an unsigned warrant: a judge signs it first (custodian warrant sign)"}},
		{"PEM as signed warrant", []string{"release", "--server", "https://127.0.0.1:1", "--warrant", cert, "--out", p("r.json")},
			[]string{"this is PEM; the signed warrant is the DER file", "hint: --warrant must be a signed warrant (custodian warrant sign)"}},
		{"CRL as root", []string{"--data-dir", p("store"), "trust", "add-root", crl, "--court", "Test Court"},
			[]string{"FILE " + crl + " is not the court's root CA certificate (PEM or DER): it is a PEM x509 crl", "hint: give the certificate; a CRL goes to custodian trust set-crl"}},
		{"certificate as CRL", []string{"--data-dir", p("store"), "trust", "set-crl", cert},
			[]string{"is not a CRL (PEM or DER, as openssl ca -gencrl writes it): it is a PEM certificate", "hint: "}},
		{"text as roots", []string{"warrant", "verify", "--in", unsigned, "--roots", text, "--court", "Test Court"},
			[]string{text + ": the file holds no certificate: it is neither PEM", "hint: --roots is"}},
		{"certificate as CRL for verify", []string{"warrant", "verify", "--in", unsigned, "--roots", cert, "--court", "Test Court", "--crl", cert},
			[]string{"--crl " + cert + " is not a CRL: it is a PEM certificate", "hint: "}},
		{"text as CA", []string{"attest", "--server", unpinned.URL, "--ca", text, "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{text + ": the file holds no certificate: it is neither PEM", "hint: --ca is the PEM certificate of the CA"}},
		{"certificate as boot key", []string{"image", "sign", "--in", text, "--key", cert, "--out", p("boot.sig")},
			[]string{"is not a private key"}},

		// Wrong keys and mismatched material.
		{"too few releases for a scoped envelope", []string{"escrow", "open", "--identity", batch.identity, "--escrow", batch.escrowFile,
			"--release", oneRelease, "--in", envelope, "--out", p("plain")},
			[]string{"not enough valid partials to open this envelope: 1 valid, 2 needed", "hint: a scoped release opens only the envelopes its warrant named"}},
		{"recover on a scoped key ID", []string{"recover", "--identity", batch.identity, "--escrow", batch.escrowFile, "--release", oneRelease, "--out", p("k")},
			[]string{"its escrow key is never rebuilt", "custodian escrow open --release"}},
		{"agency key as escrow key", []string{"escrow", "open", "--key", batch.identity, "--in", envelope, "--out", p("plain")},
			[]string{"--key " + batch.identity + " is not an escrow key file (from custodian recover): it is an agency identity (agency.key)", "hint: for a share-mode key ID, --key is the key file custodian recover wrote"}},
		{"agency identity as update key", []string{"update", "sign", "--key", batch.identity, "--policy", text, "--out", p("u.note")},
			[]string{"--key " + batch.identity + " is not an update key (update.key, from custodian update keygen): it is an agency identity (agency.key)", "hint: --key is the private update.key"}},
		{"agency identity as recipient", warrantWith("--recipient", batch.identity),
			[]string{"--recipient " + batch.identity + " is not an agency public key: it is an agency identity (agency.key)", "hint: --recipient is the agency's public key (agency.pub"}},
		{"text as envelope to open", []string{"escrow", "open", "--identity", batch.identity, "--escrow", batch.escrowFile, "--release", oneRelease, "--in", text, "--out", p("plain2")},
			[]string{text + ": the envelope does not open: not an escrow envelope", "hint: --in takes escrow envelopes (F.env"}},
		{"directory without envelopes", warrantWith("--envelope-dir", p("adir")),
			[]string{"--envelope-dir " + p("adir") + " holds no *.env file", "hint: --envelope-dir is a directory of escrow envelopes"}},

		// Bad flags and values.
		{"no key and no release", []string{"escrow", "open", "--in", envelope, "--out", p("plain")},
			[]string{"give either --key or --release", "hint: --key for a share-mode key ID"}},
		{"custodian ID with capitals", warrantFlags("Court_A", nowArg),
			[]string{`custodian ID "Court_A": use 1 to 63 lowercase letters, digits, '.' and '-'`}},
		{"time not RFC 3339", warrantFlags("court-a", "yesterday"),
			[]string{`not_before "yesterday" is not an RFC 3339 time, such as 2026-11-20T09:00:00Z`}},
		{"validity too long", warrantFlags("court-a", "2025-01-01T00:00:00Z"),
			[]string{"warrant is valid for 366 days, at most 30 days allowed", "hint: shorten the window"}},
		{"update key name with a space", []string{"update", "keygen", "--name", "court update", "--out", p("u.key"), "--pub", p("u.pub")},
			[]string{`--name "court update": a key name is not empty and has no spaces and no '+'`, "hint: for example --name"}},
		{"nonce not hex", []string{"attest", "verify", "--enrollment", text, "--policy", text, "--nonce", "00", "--in", text, "--ledger-key", text},
			[]string{"--nonce: want 8 to 64 bytes in hex"}},
		{"roots without court", []string{"warrant", "verify", "--in", unsigned, "--roots", cert},
			[]string{"--roots needs --court", `hint: add --court "NAME"`}},
		{"bad server URL", []string{"attest", "--server", "custodian-a:8443", "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{"bad --server", "hint: give a URL such as https://custodian-a:8443"}},
		{"plain HTTP unasked", []string{"attest", "--server", "http://127.0.0.1:1", "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{"refusing plain HTTP", "hint: use the https:// address"}},
		{"serve without TLS", append(dev, "serve", "--listen", "127.0.0.1:0", "--button", "sim"),
			[]string{"serve needs TLS", "hint: docs/operator.md (section 4)"}},
		{"number flag not a number", []string{"ledger", "prove", "--index", "x"},
			[]string{`--index "x": want a whole number`, "hint: custodian ledger prove --help shows how to call it"}},
		{"duration flag not a duration", []string{"--data-dir", p("data"), "button", "press", "--hold", "forever"},
			[]string{`--hold "forever": want a duration such as 30s`, "hint: custodian button press --help"}},
		{"required flag missing", []string{"escrow", "seal", "--escrow", batch.escrowFile},
			[]string{`required flag(s) "in", "out", "target" not set`, "hint: custodian escrow seal --help"}},
		{"unknown flag", []string{"recover", "--shares", oneRelease},
			[]string{"unknown flag: --shares", "hint: custodian recover --help"}},
		{"unknown command", []string{"warrant", "submit"},
			[]string{`unknown command "submit"`, "hint: custodian warrant --help"}},
		{"misspelled command before its flags", []string{"warrant", "verfy", "--in", unsigned},
			[]string{`unknown command "verfy" for "custodian warrant"`, "hint: did you mean custodian warrant verify?"}},
		{"misspelled group command", []string{"trust", "add-roots", cert},
			[]string{`unknown command "add-roots" for "custodian trust"`, "hint: did you mean custodian trust add-root?"}},
		{"unknown completion shell", []string{"completion", "bogus"},
			[]string{`unknown command "bogus" for "custodian completion"`, "hint: custodian completion --help lists its commands"}},
		{"certificate as client key", []string{"release", "--server", "https://127.0.0.1:1", "--client-cert", text, "--client-key", cert, "--warrant", unsigned, "--out", p("r.json")},
			[]string{"--client-key " + cert + " is a certificate, not a private key", "hint: --client-cert is the certificate and --client-key its private key: were they swapped?"}},
		{"client key of another certificate", []string{"release", "--server", "https://127.0.0.1:1", "--client-cert", cert, "--client-key", keyFile, "--warrant", unsigned, "--out", p("r.json")},
			[]string{"the client certificate: --client-key is not the private key of the certificate in --client-cert", "hint: --client-cert is your PEM certificate"}},
		{"certificate as TLS key", append(dev, "serve", "--listen", "127.0.0.1:0", "--button", "sim", "--tls-cert", text, "--tls-key", cert),
			[]string{"--tls-key " + cert + " is a certificate, not a private key", "hint: --tls-cert is the certificate and --tls-key its private key"}},
		{"certificate as envelope", warrantWith("--envelope", cert),
			[]string{cert + ": the envelope does not open", "hint: --envelope and --envelope-dir take escrow envelopes"}},
		{"unknown KEM", []string{"agency", "keygen", "--kem", "rsa", "--out", p("a.key"), "--pub", p("a.pub")},
			[]string{`unknown KEM "rsa"; use mlkem768x25519, mlkem768p256 or x25519`}},
		{"ledger over the network without a key", []string{"ledger", "verify", "--server", unpinned.URL},
			[]string{"--server needs --verifier-key", "hint: pin the appliance's key"}},
		{"opening that is no opening", []string{"ledger", "verify-opening", "--in", text, "--verifier-key", verifierKey},
			[]string{"the opening is malformed: malformed JSON", "hint: --in is an opening file that custodian ledger reveal wrote"}},
		{"opening not there", []string{"ledger", "verify-opening", "--in", missing, "--verifier-key", verifierKey},
			[]string{missing}},
		{"salts file that is no salts file", []string{"ledger", "reveal", "--salts", text, "--warrant", unsigned, "--out", p("o.json")},
			[]string{"the salts file is malformed", "hint: --salts is the .salts.json file custodian release kept"}},
		{"reveal of an unsigned warrant", []string{"ledger", "reveal", "--salts", saltsFile, "--warrant", unsigned, "--out", p("o.json")},
			[]string{"is a warrant document, not the signed warrant", "hint: give the w.p7s custodian release submitted"}},
		{"opening with --court and no --roots", []string{"ledger", "verify-opening", "--in", text, "--verifier-key", verifierKey, "--court", "C"},
			[]string{"--roots is missing", "hint: add --roots FILE"}},

		// Servers and devices that do not answer, or not as pinned.
		{"server not running", []string{"attest", "--server", closed.URL, "--insecure-http", "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{"cannot reach the custodian at " + strings.TrimPrefix(closed.URL, "http://") + ": connect: connection refused", "hint: check --server and that the custodian is up"}},
		{"server CA not pinned", []string{"attest", "--server", unpinned.URL, "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{"its TLS certificate is signed by a CA that is not trusted here", "hint: the server's certificate is not from a CA this computer trusts: pass --ca FILE"}},
		{"https to a plain HTTP server", []string{"attest", "--server", "https://" + plain.Listener.Addr().String(), "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{"it answered in plain HTTP to a TLS (https://) request", "hint: the server speaks plain HTTP: it runs custodian serve --insecure-http"}},
		{"host not known", []string{"attest", "--server", "https://nosuchhost.invalid:8443", "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{"no computer named nosuchhost.invalid is known", "hint: check the host name in --server"}},
		{"server of another CA", []string{"attest", "--server", unpinned.URL, "--ca", cert, "--nonce", "0011223344556677", "--out", p("a.json")},
			[]string{"hint: the server's certificate is not from the CA you pinned (--ca " + cert + ")"}},
		{"swtpm not running", append(dev, "ledger", "verify"),
			[]string{"opening TPM swtpm:127.0.0.1:1", "hint: no swtpm answers at 127.0.0.1:1"}},
		{"no TPM device", []string{"--tpm", p("tpm0"), "--data-dir", p("data"), "floor", "show"},
			[]string{"hint: this machine has no TPM device"}},
		{"no simulated button", []string{"--data-dir", p("data"), "button", "press"},
			[]string{"no simulated button", "hint: start custodian serve --button sim with the same --data-dir"}},
	} {
		t.Run(c.name, func(t *testing.T) { checkUserError(t, c) })
	}
}

// TestEveryDeviceUserErrorNamesCauseAndNextStep is the same check for the
// failures that need an enrolled device on swtpm: an EK certificate that
// chains to no root given, and another custodian's bundle.
func TestEveryDeviceUserErrorNamesCauseAndNextStep(t *testing.T) {
	dir := t.TempDir()
	d, final, secret := enrollDevice(t, "court-a", dir)
	data, err := os.ReadFile(final)
	if err != nil {
		t.Fatal(err)
	}
	e, err := enrollment.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tpm.ParseEK(e.EK.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	importKey, err := tpm.ParseImportKey(e.ImportKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_, bundles, err := escrow.Ceremony("2026-11", 2, tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}, []escrow.Member{
		{ID: "court-a", EK: ek, ImportKey: importKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
		escrow.WithMode(escrow.ModeShare))
	if err != nil {
		t.Fatal(err)
	}
	other, err := bundles[1].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "ek-roots.pem")
	writeSwtpmRoots(t, d.sw, roots)
	otherPath := filepath.Join(dir, "court-b.bundle.json")
	if err := os.WriteFile(otherPath, other, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []userError{
		{"EK of a CA not given", []string{"enroll", "verify", "--in", final, "--secret", secret},
			[]string{"EK certificate does not chain to a TPM vendor root", "pass them with --ek-roots FILE", "swtpm-localca-rootca-cert.pem and issuercert.pem"}},
		{"another custodian's bundle", d.args("provision", "--bundle", otherPath),
			[]string{"this bundle is for court-b, and this device is court-a", "hint: each custodian gets its own bundle"}},
		{"enrollment as bundle", d.args("provision", "--bundle", final),
			[]string{"--bundle " + final + ":", "hint: "}},
		{"ledger init twice", d.args("ledger", "init"),
			[]string{"a ledger already exists in the data directory", "hint: this device already has its ledger: custodian ledger verify checks it"}},
		{"entry past the end", d.args("ledger", "prove", "--index", "999"),
			[]string{"no ledger entry 999", "hint: this ledger holds entries 0 to "}},
		{"reseal without a share", d.args("reseal", "--update", final),
			[]string{"no share is provisioned; nothing to reseal", "hint: a device without a share stays on its image"}},
		{"another challenge's secret", []string{"enroll", "verify", "--in", final, "--secret", writeTemp(t, "00112233445566778899aabbccddeeff\n"), "--ek-roots", roots},
			[]string{"the enrollment answered another challenge", "hint: "}},
		{"secret not hex", []string{"enroll", "verify", "--in", final, "--secret", final, "--ek-roots", roots},
			[]string{"not a challenge secret (hex)", "hint: --secret is the challenge.secret"}},
		{"warrant verify on a device without shares", []string{"--data-dir", d.data, "warrant", "verify", "--in", final},
			[]string{"warrant refused (no_held_keys): this appliance holds no key share; provision one first"}},
		{"warrant verify for a key ID the device does not hold", []string{"--data-dir", d.data, "warrant", "verify", "--in", final, "--key-id", "2099-01"},
			[]string{"--key-id 2099-01: this device (court-a) holds no share of it (it holds: none yet: custodian provision)", "hint: leave out --key-id"}},
	} {
		t.Run(c.name, func(t *testing.T) { checkUserError(t, c) })
	}
}
