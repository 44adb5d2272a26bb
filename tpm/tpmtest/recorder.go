package tpmtest

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"

	"github.com/google/go-tpm/tpm2"
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

// EncryptedResponses counts the recorded commands with code cc (which has
// the given number of handles) and, of those, the ones that did not ask
// the TPM to encrypt the response's first parameter (no session with the
// encrypt attribute).
func (r *Recorder) EncryptedResponses(cc tpm2.TPMCC, handles int) (n, inClear int) {
	for _, e := range r.Exchanges() {
		if len(e.Command) < 10 || tpm2.TPMCC(binary.BigEndian.Uint32(e.Command[6:10])) != cc {
			continue
		}
		n++
		if !asksResponseEncryption(e.Command, handles) {
			inClear++
		}
	}
	return n, inClear
}

// asksResponseEncryption reads a command's authorization area.
func asksResponseEncryption(cmd []byte, handles int) bool {
	if binary.BigEndian.Uint16(cmd[0:2]) != uint16(tpm2.TPMSTSessions) || len(cmd) < 14+4*handles {
		return false
	}
	area := cmd[10+4*handles:]
	size := int(binary.BigEndian.Uint32(area))
	if len(area) < 4+size {
		return false
	}
	sessions := area[4 : 4+size]
	for len(sessions) >= 9 {
		nonce := int(binary.BigEndian.Uint16(sessions[4:]))
		if len(sessions) < 9+nonce {
			return false
		}
		if sessions[6+nonce]&0x40 != 0 { // TPMA_SESSION encrypt
			return true
		}
		hmac := int(binary.BigEndian.Uint16(sessions[7+nonce:]))
		if len(sessions) < 9+nonce+hmac {
			return false
		}
		sessions = sessions[9+nonce+hmac:]
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
