package tpmtest

import (
	"bytes"
	"io"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"
)

// Exchange is one command and its response as they crossed the bus.
type Exchange struct {
	Command, Response []byte
}

// Recorder is a transport that keeps a copy of every command and response
// passing through it: what a probe on the TPM's bus would see.
type Recorder struct {
	TPM transport.TPM

	mu        sync.Mutex
	exchanges []Exchange
}

// Send implements transport.TPM.
func (r *Recorder) Send(cmd []byte) ([]byte, error) {
	rsp, err := r.TPM.Send(cmd)
	r.mu.Lock()
	r.exchanges = append(r.exchanges, Exchange{bytes.Clone(cmd), bytes.Clone(rsp)})
	r.mu.Unlock()
	return rsp, err
}

// Exchanges returns what was recorded so far.
func (r *Recorder) Exchanges() []Exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Exchange(nil), r.exchanges...)
}

// Count is the number of commands sent.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.exchanges)
}

// Reset forgets what was recorded.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.exchanges = nil
	r.mu.Unlock()
}

// Seen reports whether secret appears in any recorded command or response.
func (r *Recorder) Seen(secret []byte) bool {
	for _, e := range r.Exchanges() {
		if bytes.Contains(e.Command, secret) || bytes.Contains(e.Response, secret) {
			return true
		}
	}
	return false
}

// ReadWriter adapts r for APIs that speak to a TPM through an
// io.ReadWriter (go-tpm's legacy API, which go-tpm-tools' client uses):
// each Write sends one command, the next Read returns its whole response.
// Unlike transport.ToReadWriter it does not end a response with io.EOF,
// which that API treats as a failure.
func (r *Recorder) ReadWriter() io.ReadWriter { return &readWriter{tpm: r} }

type readWriter struct {
	tpm      transport.TPM
	response []byte
}

func (rw *readWriter) Write(p []byte) (int, error) {
	rsp, err := rw.tpm.Send(p)
	if err != nil {
		return 0, err
	}
	rw.response = rsp
	return len(p), nil
}

func (rw *readWriter) Read(p []byte) (int, error) {
	n := copy(p, rw.response)
	rw.response = rw.response[n:]
	return n, nil
}
