package release

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// listSubmission is the start of a multipart submission of p7s with a
// list that announces MaxListEntries and sends 40 of them: a sender that
// never finishes.
func listSubmission(t *testing.T, p7s []byte) []byte {
	t.Helper()
	refs := make([]warrant.EnvelopeRef, 40)
	for i := range refs {
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		refs[i] = warrant.EnvelopeRef{KeyID: "2026-12", Target: "alice@example.org", Enc: k.PublicKey().Bytes(),
			CiphertextSHA256: bytes.Repeat([]byte{1}, 32), Proof: bytes.Repeat([]byte{2}, 64)}
	}
	l, err := warrant.ListOf(refs)
	if err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	l.WriteTo(&file)
	entries := file.Bytes()[bytes.IndexByte(file.Bytes(), '\n')+1:]
	var b bytes.Buffer
	b.WriteString("--B\r\nContent-Disposition: form-data; name=\"warrant\"\r\n\r\n")
	b.Write(p7s)
	b.WriteString("\r\n--B\r\nContent-Disposition: form-data; name=\"envelopes\"\r\n\r\n")
	fmt.Fprintf(&b, "custodian envelope list v1 %d\n", warrant.MaxListEntries)
	b.Write(entries)
	return b.Bytes()
}

// selfSignedWarrant is a warrant naming a list, signed by a key whose
// self-signed certificate no court trusts: its signature matches its
// certificate, so only the trust store would refuse it.
func selfSignedWarrant(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Judge Nobody"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	agency, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	w := &warrant.Warrant{Version: 1, Serial: "W-list", Docket: "CR-1/2026", Court: "Test Court",
		Agency: "Test Police", Official: "Inspector Morse", Offence: "fraud",
		Targets: []string{"alice@example.org"}, KeyIDs: []string{"2026-12"}, Custodians: []string{"court-a"},
		NotBefore: now.Add(-time.Hour).Format(time.RFC3339), NotAfter: now.Add(time.Hour).Format(time.RFC3339),
		Recipient:    agency.Public().String(),
		EnvelopeList: &warrant.ListDigest{Count: warrant.MaxListEntries, TreeHash: bytes.Repeat([]byte{3}, 32)}}
	content, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	p7s, err := warrant.Sign(content, []warrant.Signer{{Key: key, Chain: []*x509.Certificate{cert}}}, now)
	if err != nil {
		t.Fatal(err)
	}
	return p7s
}

// submitSlowly sends n submissions of body at once, each stopping after
// body (never finishing its list), and returns how many the appliance
// took whole (its list parser reading) within a few seconds, and the
// status codes of those it answered.
func submitSlowly(t *testing.T, h http.Handler, body []byte, n int) (reading int, answered []int) {
	t.Helper()
	var wg sync.WaitGroup
	read := make(chan int, n)
	codes := make(chan int, n)
	var pipes []*io.PipeWriter
	for range n {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		req := httptest.NewRequest("POST", "/v1/warrants", pr)
		req.Header.Set("Content-Type", "multipart/form-data; boundary=B")
		wg.Add(2)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			pr.CloseWithError(io.ErrClosedPipe) // a refused sender stops
			codes <- rec.Code
		}()
		go func() {
			defer wg.Done()
			// Returns once the appliance has taken the whole of body in.
			if _, err := pw.Write(body); err == nil {
				read <- 1
			}
		}()
	}
	deadline := time.After(3 * time.Second)
wait:
	for reading+len(answered) < n {
		select {
		case <-read:
			reading++
		case c := <-codes:
			answered = append(answered, c)
		case <-deadline:
			break wait
		}
	}
	for _, pw := range pipes {
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}
	wg.Wait()
	return reading, answered
}

func listAPI() *API {
	d := &Daemon{cfg: Config{Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, tally: newTally(time.Now())}
	return &API{Daemon: d, Verify: 2, Lists: 2, Limit: NewLimiter(1000, 1000), Global: NewLimiter(1000, 1000)}
}

// TestListsAreReadInsideTheVerificationCap: an envelope list (up to 64
// MiB, some 77 MiB of heap parsed at 100,000 entries) is read only inside
// the list cap: of six slow submissions of a warrant whose signature
// matches its certificate, no more lists than the cap are being read at
// once, and the others are refused with busy at once instead of being
// read.
func TestListsAreReadInsideTheVerificationCap(t *testing.T) {
	api := listAPI()
	reading, answered := submitSlowly(t, api.Handler(), listSubmission(t, selfSignedWarrant(t)), 6)
	if reading > api.Lists {
		t.Errorf("%d envelope lists were being read at once with a cap of %d", reading, api.Lists)
	}
	busy := 0
	for _, c := range answered {
		if c == http.StatusConflict {
			busy++
		}
	}
	if busy < 6-api.Lists {
		t.Errorf("%d submissions beyond the cap of %d were refused busy (answers %v); want %d", busy, api.Lists, answered, 6-api.Lists)
	}
}

// TestListsAreReadOnlyAfterTheWarrantPart: a warrant part that is not a
// signed warrant is refused before its list is read.
func TestListsAreReadOnlyAfterTheWarrantPart(t *testing.T) {
	api := listAPI()
	reading, answered := submitSlowly(t, api.Handler(), listSubmission(t, []byte("not yet a warrant")), 3)
	if reading != 0 || len(answered) != 3 {
		t.Errorf("%d lists of warrants that do not parse were read (answers %v)", reading, answered)
	}
}
