package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
)

// networkDevice is a device ready to serve, with a warrant for it signed
// and saved, and a function that reads its ledger size through the API.
func networkDevice(t testing.TB, serial string) (*device, string) {
	t.Helper()
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	p7s := filepath.Join(t.TempDir(), serial+".p7s")
	os.WriteFile(p7s, c.sign(t, serial, agency.Public(), []string{"court-a"}, []string{"2026-11"}, now), 0o644)
	return d, p7s
}

func ledgerSize(t *testing.T, c *client) float64 {
	t.Helper()
	var h map[string]any
	c.getJSON(t, "/v1/health", &h)
	n, _ := h["ledger_size"].(float64)
	return n
}

// TestInvariantPlainHTTPOnlyWhenAskedAndAnnounced: serve without TLS
// flags does not start; with --insecure-http it says so in its log and on
// the display, beside every summary; a client refuses http:// unless told
// --insecure-http too, and then warns.
func TestInvariantPlainHTTPOnlyWhenAskedAndAnnounced(t *testing.T) {
	d, p7s := networkDevice(t, "W-plain")
	code, out, stderr := cli(t, d.args("serve", "--listen", "127.0.0.1:0", "--button", "sim")...)
	if code == 0 || strings.Contains(out, "serving on") || !strings.Contains(stderr, "serve needs TLS") || !strings.Contains(stderr, "hint: --insecure-http") {
		t.Fatalf("serve without TLS: exit %d\n%s%s", code, out, stderr)
	}

	dm := startDaemon(t, d, "--insecure-http")
	if !strings.HasPrefix(dm.client.base, "http://") {
		t.Fatalf("serving on %s", dm.client.base)
	}
	if log := dm.errOut.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "plain HTTP (--insecure-http)") {
		t.Errorf("the log does not warn of plain HTTP:\n%s", log)
	}
	if !strings.Contains(dm.out.String(), "WARNING: plain HTTP") {
		t.Errorf("the display does not warn of plain HTTP:\n%s", dm.out)
	}

	before := ledgerSize(t, dm.client)
	out1 := filepath.Join(t.TempDir(), "release.json")
	code, _, stderr = cli(t, "release", "--server", dm.client.base, "--warrant", p7s, "--out", out1)
	if code == 0 || !strings.Contains(stderr, "refusing plain HTTP") || !strings.Contains(stderr, "hint: ") {
		t.Fatalf("a client sent over plain HTTP unasked: exit %d %s", code, stderr)
	}
	if strings.Contains(dm.out.String(), "WARRANT AWAITING APPROVAL") || ledgerSize(t, dm.client) != before {
		t.Fatal("the refused client's warrant reached the daemon")
	}

	code, stdout, stderr := releaseWithPress(t, d, dm, p7s, out1, "--insecure-http")
	if code != 0 || !strings.Contains(stderr, "warning: plain HTTP") {
		t.Fatalf("release with --insecure-http: exit %d\n%s%s", code, stdout, stderr)
	}
	_, after, _ := strings.Cut(dm.out.String(), "WARRANT AWAITING APPROVAL")
	if !strings.Contains(after, "WARNING: plain HTTP") {
		t.Errorf("the summary is shown without the plain-HTTP warning:\n%s", dm.out)
	}
}

// TestInvariantOnlyCourtOfficersSubmit: with --client-ca, a submission or
// a request's status without a client certificate is refused with
// client_cert_required, and with another court's officer certificate with
// client_cert_untrusted, each with a hint, neither reaching the daemon or
// its ledger; the daemon keeps serving and the officer's release goes
// through.
func TestInvariantOnlyCourtOfficersSubmit(t *testing.T) {
	d, p7s := networkDevice(t, "W-officer")
	dm := startDaemon(t, d)
	before := ledgerSize(t, dm.client)
	out := filepath.Join(t.TempDir(), "release.json")
	other := newSite(t)
	for _, c := range []struct {
		name string
		args []string
		code release.Code
		hint string
	}{
		{"no certificate", dm.auditorArgs(), release.CodeClientCertRequired, "hint: this custodian takes warrants only from court officers"},
		{"another court's officer", []string{"--ca", dm.site.ServerCA, "--client-cert", other.Cert, "--client-key", other.Key},
			release.CodeClientCertUntrusted, "hint: your --client-cert is not from the court officers' CA"},
	} {
		code, _, stderr := cli(t, append([]string{"release", "--server", dm.client.base, "--warrant", p7s, "--out", out}, c.args...)...)
		if code == 0 || !strings.Contains(stderr, "refused: "+string(c.code)) || !strings.Contains(stderr, c.hint) {
			t.Errorf("%s: exit %d %s", c.name, code, stderr)
		}
	}
	anyone := &client{base: dm.client.base, http: dm.site.httpClient(false)}
	status, _, eb := anyone.submit(t, []byte("not a warrant"))
	if status != http.StatusForbidden || eb.Error.Code != release.CodeClientCertRequired {
		t.Errorf("raw submission without a certificate: %d %+v", status, eb)
	}
	if code, body := anyone.get(t, "/v1/requests/00000000000000000000000000000000"); code != http.StatusForbidden || !bytes.Contains(body, []byte(release.CodeClientCertRequired)) {
		t.Errorf("a request's status without a certificate: %d %s", code, body)
	}
	if ledgerSize(t, dm.client) != before || strings.Contains(dm.out.String(), "WARRANT AWAITING APPROVAL") {
		t.Fatal("a refused submission reached the daemon or its ledger")
	}
	// Counted, not logged one by one: anyone can send them.
	var h map[string]any
	dm.client.getJSON(t, "/v1/health", &h)
	counted, _ := h["counted"].(map[string]any)
	if counted[string(release.CodeClientCertRequired)] == nil || counted[string(release.CodeClientCertUntrusted)] == nil {
		t.Errorf("the refusals are not counted: %v", h["counted"])
	}
	if strings.Contains(dm.errOut.String(), "code=client_cert_required") {
		t.Errorf("a refusal of an unauthenticated request has a log line of its own:\n%s", dm.errOut)
	}

	code, stdout, stderr := releaseWithPress(t, d, dm, p7s, out)
	if code != 0 || !strings.Contains(stdout, "released key ID 2026-11") {
		t.Fatalf("the officer's release after the refusals: exit %d\n%s%s\ndaemon:\n%s", code, stdout, stderr, dm.errOut)
	}
	checkPackage(t, d, out)
}

// TestInvariantAuditorsReadWithoutAClientCertificate: with --client-ca,
// the ledger routes, health and attestation answer anyone over TLS.
func TestInvariantAuditorsReadWithoutAClientCertificate(t *testing.T) {
	d, _ := networkDevice(t, "W-auditor")
	dm := startDaemon(t, d)
	anyone := &client{base: dm.client.base, http: dm.site.httpClient(false)}
	for _, path := range []string{"/v1/health", "/v1/checkpoint", "/v1/entries/0", "/v1/consistency?old=1&size=1", "/v1/tlog/checkpoint", "/v1/tlog/tile/0/000.p/1", "/v1/tlog/tile/entries/000.p/1"} {
		if code, body := anyone.get(t, path); code != http.StatusOK {
			t.Errorf("GET %s without a certificate: %d %s", path, code, body)
		}
	}
	resp, err := anyone.http.Post(anyone.base+"/v1/attest", "application/json", strings.NewReader(`{"nonce":"00112233445566778899"}`))
	if err != nil {
		t.Fatal(err)
	}
	var eb release.ErrorBody
	json.Unmarshal(readAll(resp), &eb)
	if eb.Error.Code != release.CodeUnavailable { // open, but no event log in this test
		t.Errorf("attest without a certificate: %d %+v", resp.StatusCode, eb)
	}
	remote := append([]string{"--server", dm.client.base, "--verifier-key", filepath.Join(d.data, "ledger-key.pub")}, dm.auditorArgs()...)
	if out := mustCLI(t, append([]string{"ledger", "checkpoint"}, remote...)...); !strings.HasPrefix(out, "custodian/court-a\n") {
		t.Errorf("ledger checkpoint: %q", out)
	}
}

// TestInvariantClientsTalkOnlyToThePinnedServerOverTLS: a client sends
// nothing to a server whose certificate is not from the CA it pinned with
// --ca (or, without --ca, from the system's roots), nor to an http://
// server unless told --insecure-http, nor where a redirect points.
func TestInvariantClientsTalkOnlyToThePinnedServerOverTLS(t *testing.T) {
	var requests atomic.Int64
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusTeapot)
	})
	s, other := newSite(t), newSite(t)
	tlsCfg, _ := s.serverTLS(t)
	srv := httptest.NewUnstartedServer(count)
	srv.TLS = tlsCfg
	srv.StartTLS()
	defer srv.Close()
	plain := httptest.NewServer(count)
	defer plain.Close()
	// The pinned server itself may not send the warrant elsewhere.
	redirect := httptest.NewUnstartedServer(http.RedirectHandler(plain.URL+"/v1/warrants", http.StatusTemporaryRedirect))
	redirect.TLS = tlsCfg
	redirect.StartTLS()
	defer redirect.Close()

	dir := t.TempDir()
	w := filepath.Join(dir, "w.p7s")
	now := time.Now().UTC()
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(w, newCourt(t, now).sign(t, "W-pinned", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now), 0o644)
	out := filepath.Join(dir, "r.json")
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"another CA pinned":  {[]string{"release", "--server", srv.URL, "--warrant", w, "--out", out, "--ca", other.ServerCA, "--client-cert", s.Cert, "--client-key", s.Key}, "hint: the server's certificate is not from the CA you pinned"},
		"system roots":       {[]string{"release", "--server", srv.URL, "--warrant", w, "--out", out}, "hint: the server's certificate is not from a CA this computer trusts: pass --ca FILE"},
		"ledger, another CA": {[]string{"ledger", "checkpoint", "--server", srv.URL, "--ca", other.ServerCA, "--verifier-key", someVerifierKey(t)}, "not from the CA you pinned"},
		"attest, another CA": {[]string{"attest", "--server", srv.URL, "--ca", other.ServerCA, "--nonce", "0011223344556677", "--out", out}, "not from the CA you pinned"},
		"plain, unasked":     {[]string{"release", "--server", plain.URL, "--warrant", w, "--out", out}, "refusing plain HTTP"},
		"redirected":         {[]string{"release", "--server", redirect.URL, "--warrant", w, "--out", out, "--ca", s.ServerCA}, "redirect"},
	} {
		code, _, stderr := cli(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: exit %d %s", name, code, stderr)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the clients sent %d requests to servers they must not trust", n)
	}
	// The pinned CA reaches the server (which answers 418 here).
	code, _, stderr := cli(t, "release", "--server", srv.URL, "--warrant", w, "--out", out, "--ca", s.ServerCA)
	if code == 0 || requests.Load() != 1 || !strings.Contains(stderr, "418") {
		t.Fatalf("the pinned server was not reached: exit %d, %d requests, %s", code, requests.Load(), stderr)
	}
}

// someVerifierKey is a well-formed signed-note verifier key of no
// appliance: for commands that must fail before any checkpoint is read.
func someVerifierKey(t *testing.T) string {
	t.Helper()
	_, verifier, err := note.GenerateKey(rand.Reader, "custodian/x")
	if err != nil {
		t.Fatal(err)
	}
	return verifier
}
