package release

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/warrant"
)

// TestBreakListSubmissionsAreReadOutsideTheVerificationCap: the API caps
// concurrent verifications (Verify, 2 by default) so that a flood
// queues, but a submission's envelope list — up to 64 MiB, some 77 MiB
// of heap once parsed at 100,000 entries (BenchmarkBreakListHeldPerSubmission)
// — is read and parsed before that cap is taken, before the warrant's
// signature is checked, for up to 30 minutes per connection. Six slow
// submissions here are all being parsed at once; on the appliance 128
// connections can, which is several GiB on a Pi. No more lists than the
// cap should be in memory at once.
func TestBreakListSubmissionsAreReadOutsideTheVerificationCap(t *testing.T) {
	d := &Daemon{cfg: Config{Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, tally: newTally(time.Now())}
	api := &API{Daemon: d, Verify: 2, Limit: NewLimiter(1000, 1000), Global: NewLimiter(1000, 1000)}
	h := api.Handler()

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
	prefix := "--B\r\nContent-Disposition: form-data; name=\"warrant\"\r\n\r\nnot yet a warrant\r\n" +
		"--B\r\nContent-Disposition: form-data; name=\"envelopes\"\r\n\r\n" +
		fmt.Sprintf("custodian envelope list v1 %d\n", warrant.MaxListEntries)

	const n = 6
	var wg sync.WaitGroup
	read := make(chan int, n)
	var pipes []*io.PipeWriter
	for i := range n {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		req := httptest.NewRequest("POST", "/v1/warrants", pr)
		req.Header.Set("Content-Type", "multipart/form-data; boundary=B")
		wg.Add(2)
		go func() { defer wg.Done(); h.ServeHTTP(httptest.NewRecorder(), req) }()
		go func() {
			defer wg.Done()
			// Returns once the appliance has taken the list's first
			// entries in.
			if _, err := pw.Write(append([]byte(prefix), entries...)); err == nil {
				read <- i
			}
		}()
	}
	parsing := 0
	deadline := time.After(3 * time.Second)
wait:
	for parsing < n {
		select {
		case <-read:
			parsing++
		case <-deadline:
			break wait
		}
	}
	for _, pw := range pipes {
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}
	wg.Wait()
	if parsing > api.Verify {
		t.Errorf("%d envelope lists were being read and parsed at once, before any warrant verified, with a verification cap of %d", parsing, api.Verify)
	}
}
