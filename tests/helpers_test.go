// Package tests runs the appliance end to end on real parts: swtpm for the
// TPM, SoftHSM2 for the judge's smartcard, real files and sockets, the
// custodian binary built from this tree. Only the GPIO pins are fake
// (periph's gpiotest, or the daemon's simulated button).
package tests

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/release/tlstest"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// binary is the custodian command built from this tree, once per run.
var binary string

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChildDaemon())
	}
	dir, err := os.MkdirTemp("", "custodian-tests")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "custodian")
	build := exec.Command("go", "build", "-o", binary, "github.com/custodian-project/custodian/cmd/custodian")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building custodian:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the binary and returns its exit status and output.
func cli(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return code, stdout.String(), stderr.String()
}

func mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errOut := cli(t, args...)
	if code != 0 {
		t.Fatalf("custodian %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// measure extends the PCRs an image's early init would, with a digest
// derived from label: the same label is the same image.
func measure(t testing.TB, conn interface{ Send([]byte) ([]byte, error) }, label string) {
	t.Helper()
	for _, i := range []int{8, 9, 11, 12} {
		d := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", label, i)))
		if err := tpm.ExtendPCR(conn, i, d[:]); err != nil {
			t.Fatal(err)
		}
	}
}

// device is one appliance: its swtpm and data directory.
type device struct {
	id   string
	sw   *tpmtest.Swtpm
	data string
}

func (d *device) args(args ...string) []string {
	return append([]string{"--tpm", d.sw.Spec(), "--data-dir", d.data}, args...)
}

// enroll boots a device on the "approved" image, enrolls it through the
// challenge exchange, and creates its ledger.
func enroll(t testing.TB, id, dir string) (*device, string, string) {
	t.Helper()
	return enrollWith(t, id, dir, func(conn interface{ Send([]byte) ([]byte, error) }) {
		measure(t, conn, "approved")
	})
}

// enrollWith is enroll with the device's boot measurements made by boot.
func enrollWith(t testing.TB, id, dir string, boot func(conn interface{ Send([]byte) ([]byte, error) })) (*device, string, string) {
	t.Helper()
	tpmtest.RequireSwtpm(t)
	d := &device{id: id, sw: tpmtest.StartSwtpm(t), data: filepath.Join(dir, id)}
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	boot(conn)
	conn.Close()
	request := filepath.Join(dir, id+".request.json")
	final := filepath.Join(dir, id+".enrollment.json")
	challenge := filepath.Join(dir, id+".challenge.json")
	secret := filepath.Join(dir, id+".secret")
	mustCLI(t, d.args("enroll", "--id", id, "--out", request)...)
	mustCLI(t, "enroll", "challenge", "--in", request, "--out", challenge, "--secret-out", secret)
	mustCLI(t, d.args("enroll", "--id", id, "--challenge", challenge, "--out", final)...)
	mustCLI(t, d.args("ledger", "init")...)
	return d, final, secret
}

// testCourt is the court the tests' court root is pinned for.
const testCourt = "Test Court"

// court is a court PKI with one judge whose key is in memory (the refusal
// tests; the end-to-end test signs on a SoftHSM2 token).
type court struct {
	root  *trusttest.CA
	key   crypto.Signer
	judge *x509.Certificate
}

func newCourt(t testing.TB, now time.Time) *court {
	root := trusttest.NewRoot(t, "Test Court Root", now)
	key := trusttest.ECKeyP256(t)
	return &court{root: root, key: key, judge: root.Judge(t, "Judge Ada", key.Public(), now)}
}

// install puts the court root and a fresh CRL in an appliance's trust
// store, each change logged and bound as custodian trust does.
func (c *court) install(t testing.TB, a *appliance.Appliance, now time.Time, revoked ...*x509.Certificate) {
	t.Helper()
	s, err := trust.Open(filepath.Join(a.Dir, appliance.TrustDir))
	if err != nil {
		t.Fatal(err)
	}
	// The change's ledger entry is stamped at the later of now (a test's
	// clock may run ahead) and the real time.
	at := time.Now()
	if now.After(at) {
		at = now
	}
	if len(s.Roots()) == 0 {
		root := trusttest.PEM(c.root.Cert)
		if err := a.ChangeTrust(root, at, func() error { _, err := s.AddRoot(root, testCourt); return err }); err != nil {
			t.Fatal(err)
		}
	}
	crl := trusttest.CRLPEM(c.root.CRL(t, now.Add(-time.Minute), now.Add(24*time.Hour), revoked...))
	if err := a.ChangeTrust(crl, at, func() error { _, err := s.SetCRL(crl, now); return err }); err != nil {
		t.Fatal(err)
	}
}

// installOn installs the court's trust store on a device whose TPM no
// daemon holds.
func (c *court) installOn(t testing.TB, d *device, now time.Time) {
	t.Helper()
	onDevice(t, d, func(a *appliance.Appliance, _ transport.TPM) { c.install(t, a, now) })
}

// onDevice opens d's data directory with its TPM, which no daemon may
// hold, and calls f with both.
func onDevice(t testing.TB, d *device, f func(a *appliance.Appliance, conn transport.TPM)) {
	t.Helper()
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	a, err := appliance.Open(d.data, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	f(a, conn)
}

// sign writes a warrant for custodians and key IDs, signed by the judge now.
func (c *court) sign(t testing.TB, serial string, to *recipient.PublicKey, custodians, keyIDs []string, now time.Time) []byte {
	t.Helper()
	return c.signAt(t, serial, to, custodians, keyIDs, now, time.Now())
}

// signAt is sign with a chosen signing time.
func (c *court) signAt(t testing.TB, serial string, to *recipient.PublicKey, custodians, keyIDs []string, now, signingTime time.Time) []byte {
	t.Helper()
	return c.signDocument(t, draftWarrant(serial, to, custodians, keyIDs, now), signingTime)
}

// draftWarrant is the warrant sign signs, for a test to amend first.
func draftWarrant(serial string, to *recipient.PublicKey, custodians, keyIDs []string, now time.Time) *warrant.Warrant {
	return &warrant.Warrant{Version: 1, Serial: serial, Docket: "CR-1/2026", Court: testCourt,
		Agency: "Test Police", Official: "Inspector Morse", Offence: "fraud",
		Targets: []string{"alice@example.org"}, KeyIDs: keyIDs, Custodians: custodians,
		NotBefore: now.Add(-time.Hour).Format(time.RFC3339), NotAfter: now.Add(7 * 24 * time.Hour).Format(time.RFC3339),
		Recipient: to.String()}
}

// signDocument has the judge sign w at signingTime.
func (c *court) signDocument(t testing.TB, w *warrant.Warrant, signingTime time.Time) []byte {
	t.Helper()
	content, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	p7s, err := warrant.Sign(content, []warrant.Signer{{Key: c.key, Chain: []*x509.Certificate{c.judge}}}, signingTime)
	if err != nil {
		t.Fatal(err)
	}
	return p7s
}

// provisionLocal runs a 2-of-2 ceremony for keyID between the device and a
// second (absent) custodian, in share mode unless opts say otherwise, and
// provisions the device's bundle. It uses conn, the one connection to the
// device's swtpm.
func provisionLocal(t testing.TB, a *appliance.Appliance, conn interface{ Send([]byte) ([]byte, error) }, keyID string, opts ...escrow.Option) *escrow.Public {
	t.Helper()
	pcrs, err := tpm.ReadPCRs(conn, 8, 9, 11, 12)
	if err != nil {
		t.Fatal(err)
	}
	pub, bundles, err := escrow.Ceremony(keyID, 2, pcrs, []escrow.Member{
		{ID: a.ID, EK: a.EK, ImportKey: a.ImportKey}, {ID: "court-z", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}}, append([]escrow.Option{escrow.WithMode(escrow.ModeShare)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	data, err := bundles[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Provision(conn, data, time.Now()); err != nil {
		t.Fatal(err)
	}
	return pub
}

// readyDevice enrolls court-a, installs a court's trust store on it and
// provisions a share of keyID: an appliance ready to serve.
func readyDevice(t testing.TB, now time.Time, keyID string) (*device, *court) {
	t.Helper()
	d, _, _ := enroll(t, "court-a", t.TempDir())
	c := newCourt(t, now)
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	a, err := appliance.Open(d.data, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c.install(t, a, now)
	provisionLocal(t, a, conn, keyID)
	return d, c
}

// client is an API client for tests.
type client struct {
	base string
	http *http.Client
}

func (c *client) submit(t testing.TB, p7s []byte) (int, release.Status, release.ErrorBody) {
	t.Helper()
	return c.submitWithList(t, p7s, nil)
}

// submitWithList submits p7s alone (list nil) or with the envelope list
// file list, as multipart/form-data (docs/api.md).
func (c *client) submitWithList(t testing.TB, p7s, list []byte) (int, release.Status, release.ErrorBody) {
	t.Helper()
	body, contentType := bytes.NewReader(p7s), "application/pkcs7-mime"
	if list != nil {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		w, _ := mw.CreateFormField(release.PartWarrant)
		w.Write(p7s)
		w, _ = mw.CreateFormField(release.PartEnvelopes)
		w.Write(list)
		mw.Close()
		body, contentType = bytes.NewReader(b.Bytes()), mw.FormDataContentType()
	}
	resp, err := c.http.Post(c.base+"/v1/warrants", contentType, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var st release.Status
	var eb release.ErrorBody
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(data, &st); err != nil {
			t.Fatalf("status: %v %s", err, data)
		}
	} else if err := json.Unmarshal(data, &eb); err != nil {
		t.Fatalf("error body: %v %s", err, data)
	}
	return resp.StatusCode, st, eb
}

func (c *client) wait(t testing.TB, id string) release.Status {
	t.Helper()
	for {
		var st release.Status
		c.getJSON(t, "/v1/requests/"+id+"?wait=10", &st)
		if st.State != release.StateAwaitingPress && st.State != release.StateReleasing {
			return st
		}
	}
}

func (c *client) get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (c *client) getJSON(t testing.TB, path string, v any) {
	t.Helper()
	code, data := c.get(t, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, data)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// entryAt returns ledger entry i through the API, checked against the
// appliance's verifier key.
func (c *client) entryAt(t testing.TB, i int64, verifier string) *ledger.Entry {
	t.Helper()
	var inc ledger.Inclusion
	c.getJSON(t, fmt.Sprintf("/v1/entries/%d", i), &inc)
	e, err := inc.Check(verifier)
	if err != nil {
		t.Fatalf("entry %d: %v", i, err)
	}
	return e
}

// syncBuffer is a goroutine-safe output buffer.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls until f is true or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, f func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !f() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func readAll(resp *http.Response) []byte {
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return data
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// site is the TLS PKI of one daemon (tlstest): its server certificate,
// the court officers' CA and one officer's client certificate, as files
// for the command line and as configurations for Go clients.
type site struct {
	*tlstest.PKI
	roots   *x509.CertPool
	officer tls.Certificate
}

func newSite(t testing.TB) *site {
	t.Helper()
	pki, err := tlstest.Write(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s := &site{PKI: pki, roots: readPool(t, pki.ServerCA)}
	if s.officer, err = tls.LoadX509KeyPair(pki.Cert, pki.Key); err != nil {
		t.Fatal(err)
	}
	return s
}

func readPool(t testing.TB, path string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("%s: no certificate", path)
	}
	return pool
}

// serveArgs are custodian serve's TLS flags for this site.
func (s *site) serveArgs() []string {
	return []string{"--tls-cert", s.ServerCert, "--tls-key", s.ServerKey, "--client-ca", s.OfficerCA}
}

// serverTLS is the daemon's TLS configuration, as serve builds it.
func (s *site) serverTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(s.ServerCert, s.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	officers := readPool(t, s.OfficerCA)
	return release.ServerTLS(pair, officers), officers
}

// officerArgs are what a court officer's client passes; auditorArgs what
// anyone else's does.
func (s *site) officerArgs() []string {
	return []string{"--ca", s.ServerCA, "--client-cert", s.Cert, "--client-key", s.Key}
}

func (s *site) auditorArgs() []string { return []string{"--ca", s.ServerCA} }

// httpClient trusts the site's server CA and, for an officer, presents
// the officer's certificate.
func (s *site) httpClient(officer bool) *http.Client {
	cfg := &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS13}
	if officer {
		cfg.Certificates = []tls.Certificate{s.officer}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}
