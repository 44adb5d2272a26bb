package tests

// What anyone on the network can make the daemon do besides submit
// warrants: ask for attestations, open connections, post without a
// certificate. None of it may spoil an officer's release.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/attest"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

// serveAsServeDoes replaces the rig's server with one configured as
// custodian serve configures it (default rate limits, officers' CAs) and
// the given attestation function.
func serveAsServeDoes(t *testing.T, r *rig, attestFn func(nonce []byte) (any, error)) *site {
	t.Helper()
	r.srv.Close()
	s := newSite(t)
	tlsCfg, officers := s.serverTLS(t)
	api := &release.API{Daemon: r.daemon, Officers: officers, Attest: attestFn}
	r.srv = httptest.NewUnstartedServer(api.Handler())
	r.srv.TLS = tlsCfg
	r.srv.StartTLS()
	r.c = &client{base: r.srv.URL, http: s.httpClient(true)}
	return s
}

// realAttestation is what serve's attester does, on the rig's TPM.
func (r *rig) realAttestation(nonce []byte) (any, error) {
	cp, err := r.a.Ledger.Checkpoint()
	if err != nil {
		return nil, err
	}
	return attest.Create(r.tpm, r.a.ID, nonce, []int{8, 9, 11, 12}, nil, string(cp), time.Now())
}

// fromAddress is an auditor's client (no client certificate) whose
// connections come from the loopback address ip.
func fromAddress(s *site, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext,
		TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS13}}}
}

// askAttestation posts a nonce of n bytes and returns the status and the
// error body, if any.
func askAttestation(t *testing.T, c *http.Client, base string, n int) (int, release.ErrorBody) {
	t.Helper()
	nonce := make([]byte, n)
	rand.Read(nonce)
	body := fmt.Sprintf(`{"nonce":%q}`, hex.EncodeToString(nonce))
	resp, err := c.Post(base+"/v1/attest", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	data := readAll(resp)
	var eb release.ErrorBody
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(data, &eb); err != nil {
			t.Fatalf("attest: %d %s", resp.StatusCode, data)
		}
	}
	return resp.StatusCode, eb
}

// TestInvariantAttestationsCannotSpendAnApprovedWarrant: attestations
// (open to anyone) each hold a TPM object while they run. Three running
// at once would fill the TPM's three transient slots, and a release
// pressed then would fail after its ledger entry: nothing released, the
// warrant spent. The daemon runs one attestation at a time (others get
// attest_busy), none while a warrant awaits its press, and a pressed
// release waits for the one running instead of failing beside it.
func TestInvariantAttestationsCannotSpendAnApprovedWarrant(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	// A slow attestation: it holds its key (and the TPM) until let go.
	// It loads three, as three concurrent attestations would.
	holding := make(chan struct{}, 3)
	letGo := make(chan struct{})
	letAttestationsGo := sync.OnceFunc(func() { close(letGo) })
	defer letAttestationsGo() // before the server stops, whatever failed
	s := serveAsServeDoes(t, r, func(nonce []byte) (any, error) {
		var aks []*tpm.AK
		for range 3 {
			ak, err := tpm.LoadAK(r.tpm)
			if err != nil {
				return nil, err
			}
			aks = append(aks, ak)
		}
		holding <- struct{}{}
		<-letGo
		for _, ak := range aks {
			ak.Close()
		}
		return r.realAttestation(nonce)
	})
	auditor := fromAddress(s, "127.0.0.7")

	// While a warrant awaits its press, no attestation starts.
	p7s := r.warrant(t, "W-attest-pending")
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	if code, eb := askAttestation(t, auditor, r.srv.URL, 16); code != http.StatusTooManyRequests || eb.Error.Code != release.CodeAttestBusy {
		t.Errorf("an attestation while a warrant awaits its press: %d %s", code, eb.Error.Code)
	}
	r.press()
	if st = r.c.wait(t, st.ID); st.State != release.StateReleased {
		t.Fatalf("the first release: %s %s %s", st.State, st.Code, st.Message)
	}

	// Three attestations asked at once: one runs, the others are refused.
	answers := make(chan release.Code, 3)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, eb := askAttestation(t, auditor, r.srv.URL, 16)
			if code == http.StatusOK {
				answers <- "ok"
				return
			}
			answers <- eb.Error.Code
		}()
	}
	<-holding
	// Those refused answer at once; the one running holds the TPM.
	for range 2 {
		if c := <-answers; c != release.CodeAttestBusy {
			t.Errorf("a second attestation at the same time: %q, want %s", c, release.CodeAttestBusy)
		}
	}
	// A release pressed now waits for the attestation and then succeeds.
	p7s = r.warrant(t, "W-attest-press")
	status, st, eb = r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit during an attestation: %d %+v", status, eb)
	}
	r.press()
	var during release.Status
	r.c.getJSON(t, "/v1/requests/"+st.ID+"?wait=1", &during)
	if during.State == release.StateFailed || len(during.Failed) > 0 {
		t.Fatalf("the release ran beside an attestation and failed after its entry: %+v", during)
	}
	letAttestationsGo()
	wg.Wait()
	if c := <-answers; c != "ok" {
		t.Errorf("the attestation that ran: %q", c)
	}
	if st = r.c.wait(t, st.ID); st.State != release.StateReleased {
		t.Fatalf("the release pressed during an attestation: %s %s %v %s", st.State, st.Code, st.Failed, st.Message)
	}
	var h map[string]any
	r.c.getJSON(t, "/v1/health", &h)
	counted, _ := h["counted"].(map[string]any)
	if counted[string(release.CodeAttestBusy)] != float64(3) {
		t.Errorf("attest_busy counted %v times, want 3", counted[string(release.CodeAttestBusy)])
	}
}

// TestInvariantNoReleaseEntryWithoutRoomInTheTPM: a release whose TPM
// work could not run — its transient slots held by something else, such
// as a process that died holding them on a TPM without a resource
// manager — is refused before its entry (tpm_full): nothing is spent, and
// the warrant is released once the TPM has room again.
func TestInvariantNoReleaseEntryWithoutRoomInTheTPM(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	var aks []*tpm.AK
	for range 3 {
		ak, err := tpm.LoadAK(r.tpm)
		if err != nil {
			t.Fatal(err)
		}
		aks = append(aks, ak)
	}
	p7s := r.warrant(t, "W-full")
	before := r.releaseEntries(t)
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateRefused || st.Code != release.CodeTPMFull {
		t.Fatalf("a release with the TPM's slots taken: %s %s %v %s", st.State, st.Code, st.Failed, st.Message)
	}
	if n := r.releaseEntries(t); n != before {
		t.Fatalf("%d release entries written for a release that could not run", n-before)
	}
	for _, ak := range aks {
		ak.Close()
	}
	if again, _ := r.releaseOK(t, p7s); again.State != release.StateReleased {
		t.Fatalf("the same warrant once the TPM had room: %s %s", again.State, again.Code)
	}
}

// TestInvariantAttestationErrorsTellAnonymousCallersNothingOfTheTPM: an
// attestation the TPM refuses answers attest_failed with a generic
// message; the TPM's error goes to the daemon's log.
func TestInvariantAttestationErrorsTellAnonymousCallersNothingOfTheTPM(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	s := serveAsServeDoes(t, r, func(nonce []byte) (any, error) {
		// The TPM out of object memory: a real TPM error.
		var aks []*tpm.AK
		defer func() {
			for _, ak := range aks {
				ak.Close()
			}
		}()
		for range 3 {
			ak, err := tpm.LoadAK(r.tpm)
			if err != nil {
				return nil, err
			}
			aks = append(aks, ak)
		}
		return r.realAttestation(nonce)
	})
	code, eb := askAttestation(t, fromAddress(s, "127.0.0.8"), r.srv.URL, 16)
	if code != http.StatusInternalServerError || eb.Error.Code != release.CodeAttestFailed {
		t.Fatalf("a failed attestation: %d %s", code, eb.Error.Code)
	}
	if m := eb.Error.Message; strings.Contains(m, "TPM") || strings.Contains(m, "0x") || strings.Contains(m, "memory") {
		t.Errorf("the anonymous caller reads the TPM's error: %q", m)
	}
}

// TestInvariantAttestNonceRangeIsTheSameAtBothEnds: the appliance answers
// every nonce `custodian attest` sends (8 to 64 bytes) and refuses the
// same ones the client refuses.
func TestInvariantAttestNonceRangeIsTheSameAtBothEnds(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	s := serveAsServeDoes(t, r, r.realAttestation)
	c := fromAddress(s, "127.0.0.9")
	for n, want := range map[int]int{attest.MinNonce - 1: 400, attest.MinNonce: 200, 32: 200, attest.MaxNonce: 200, attest.MaxNonce + 1: 400} {
		if code, eb := askAttestation(t, c, r.srv.URL, n); code != want {
			t.Errorf("a nonce of %d bytes: %d %s, want %d", n, code, eb.Error.Code, want)
		}
		nonce := strings.Repeat("ab", n)
		code, _, stderr := cli(t, "attest", "--server", r.srv.URL, "--ca", s.ServerCA, "--nonce", nonce, "--out", t.TempDir()+"/att.json")
		if (code == 0) != (want == 200) {
			t.Errorf("custodian attest with a nonce of %d bytes: exit %d %s", n, code, stderr)
		}
	}
}

// TestInvariantUnauthenticatedPostsDoNotSpendTheOfficersBudget: posts
// without an officer's certificate are refused (client_cert_required)
// before they take a token of the submission budget all clients share,
// and are counted, not logged one by one.
func TestInvariantUnauthenticatedPostsDoNotSpendTheOfficersBudget(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	s := serveAsServeDoes(t, r, nil)
	const posts = 40 // more than the global burst (30), each address under its own limit
	for i := range 4 {
		c := fromAddress(s, fmt.Sprintf("127.0.0.%d", 50+i))
		for range posts / 4 {
			resp, err := c.Post(r.srv.URL+"/v1/warrants", "application/pkcs7-mime", bytes.NewReader([]byte("x")))
			if err != nil {
				t.Fatal(err)
			}
			readAll(resp)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("a post without a certificate: %d", resp.StatusCode)
			}
		}
	}
	status, st, eb := r.c.submit(t, r.warrant(t, "W-starved"))
	if status != http.StatusAccepted {
		t.Fatalf("the officer's warrant after %d posts without a certificate: %d %s", posts, status, eb.Error.Code)
	}
	r.press()
	r.c.wait(t, st.ID)
	var h map[string]any
	r.c.getJSON(t, "/v1/health", &h)
	counted, _ := h["counted"].(map[string]any)
	if counted[string(release.CodeClientCertRequired)] != float64(posts) {
		t.Errorf("client_cert_required counted %v times, want %d", counted[string(release.CodeClientCertRequired)], posts)
	}
}

// TestInvariantShutdownRefusalReachesTheOfficer: stopping the daemon
// refuses the request awaiting its press (shutting_down, logged) while the
// server still answers, so the officer's client polling it reads that
// refusal and what it means, not a dropped connection.
func TestInvariantShutdownRefusalReachesTheOfficer(t *testing.T) {
	d, p7sPath := networkDevice(t, "W-shutdown")
	p7s, err := os.ReadFile(p7sPath)
	if err != nil {
		t.Fatal(err)
	}
	dm := startDaemon(t, d)
	status, st, eb := dm.client.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	type answer struct {
		st  release.Status
		err error
	}
	polled := make(chan answer, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		// As custodian release polls: short waits, again while it awaits.
		var a answer
		for range 30 {
			resp, err := dm.client.http.Get(dm.client.base + "/v1/requests/" + st.ID + "?wait=1")
			if err != nil {
				polled <- answer{err: err}
				return
			}
			a = answer{}
			a.err = json.Unmarshal(readAll(resp), &a.st)
			if a.err != nil || a.st.State != release.StateAwaitingPress {
				break
			}
		}
		polled <- a
	}()
	<-started
	time.Sleep(300 * time.Millisecond) // let the poll reach the daemon
	dm.stop()
	a := <-polled
	if a.err != nil {
		t.Fatalf("the officer's poll: %v", a.err)
	}
	if a.st.State != release.StateRefused || a.st.Code != release.CodeShuttingDown || !strings.Contains(a.st.Message, "shutting down") {
		t.Fatalf("the officer's poll during the shutdown: %s %s %q", a.st.State, a.st.Code, a.st.Message)
	}
}

var handshakeReportRE = regexp.MustCompile(`(\d+) TLS handshakes failed`)

// TestInvariantFailedHandshakesAreCountedNotLoggedEach: connections that
// fail their TLS handshake (a bare connect, plain HTTP) write nothing to
// the daemon's log one by one; they are counted and logged as one line a
// minute, and when the daemon stops.
func TestInvariantFailedHandshakesAreCountedNotLoggedEach(t *testing.T) {
	d, _ := networkDevice(t, "W-log")
	dm := startDaemon(t, d)
	addr := strings.TrimPrefix(dm.client.base, "https://")
	before := strings.Count(dm.errOut.String(), "\n")
	const conns = 200
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			c.Write([]byte("GET /v1/health HTTP/1.0\r\n\r\n"))
			c.Read(make([]byte, 64))
		}
		c.Close()
	}
	var h map[string]any
	dm.client.getJSON(t, "/v1/health", &h) // the daemon still answers
	dm.stop()
	log := dm.errOut.String()
	if lines := strings.Count(log, "\n") - before; lines > 10 {
		t.Errorf("%d log lines for %d failed handshakes:\n%s", lines, conns, log)
	}
	total := 0
	for _, m := range handshakeReportRE.FindAllStringSubmatch(log, -1) {
		var n int
		fmt.Sscan(m[1], &n)
		total += n
	}
	if total != conns {
		t.Errorf("%d failed handshakes reported, want %d:\n%s", total, conns, log)
	}
}

// BenchmarkStalledHandshakesRSS measures the daemon's resident memory
// while 1,000 clients hold a TLS handshake half open (a record header,
// then nothing): the connection cap and the handshake timeout bound it
// (docs/api.md, "Limits and transport").
func BenchmarkStalledHandshakesRSS(b *testing.B) {
	d, _ := networkDevice(b, "W-mem")
	dm := startDaemon(b, d)
	addr := strings.TrimPrefix(dm.client.base, "https://")
	pid := dm.cmd.Process.Pid
	idle := rssKiB(b, pid, "VmRSS")
	partial := append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, make([]byte, 60)...)
	var held int64
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var socks []net.Conn
		for range 1000 {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			c.Write(partial)
			socks = append(socks, c)
		}
		time.Sleep(time.Second)
		held = max(held, int64(rssKiB(b, pid, "VmRSS")))
		for _, c := range socks {
			c.Close()
		}
		cancel()
	}
	b.ReportMetric(float64(idle), "idle-KiB")
	b.ReportMetric(float64(held), "stalled-KiB")
	b.ReportMetric(float64(rssKiB(b, pid, "VmHWM")), "peak-KiB")
}

// TestInvariantAttestClientWaitsOutABusyAppliance: `custodian attest
// --server` answered attest_busy asks again (each second, up to a
// minute) instead of failing: an auditor's attestation only waits.
func TestInvariantAttestClientWaitsOutABusyAppliance(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	var first sync.Once
	holding, letGo := make(chan struct{}), make(chan struct{})
	letAttestationGo := sync.OnceFunc(func() { close(letGo) })
	defer letAttestationGo()
	s := serveAsServeDoes(t, r, func(nonce []byte) (any, error) {
		first.Do(func() { close(holding); <-letGo })
		return r.realAttestation(nonce)
	})
	held := make(chan int, 1)
	go func() {
		code, _ := askAttestation(t, fromAddress(s, "127.0.0.10"), r.srv.URL, 16)
		held <- code
	}()
	<-holding
	type result struct {
		code   int
		stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, _, stderr := cli(t, "attest", "--server", r.srv.URL, "--ca", s.ServerCA,
			"--nonce", strings.Repeat("cd", 16), "--out", t.TempDir()+"/att.json")
		done <- result{code, stderr}
	}()
	// The client was refused at least once while the first attestation ran.
	for {
		var h map[string]any
		r.c.getJSON(t, "/v1/health", &h)
		if counted, _ := h["counted"].(map[string]any); counted[string(release.CodeAttestBusy)] != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	letAttestationGo()
	if code := <-held; code != http.StatusOK {
		t.Errorf("the first attestation: %d", code)
	}
	if res := <-done; res.code != 0 {
		t.Fatalf("custodian attest against a busy appliance: exit %d\n%s", res.code, res.stderr)
	}
}
