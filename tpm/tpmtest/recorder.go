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
	sent := bytes.Clone(cmd) // as it crossed the bus, whatever the TPM does to the buffer
	rsp, err := r.TPM.Send(cmd)
	r.mu.Lock()
	r.exchanges = append(r.exchanges, Exchange{sent, bytes.Clone(rsp)})
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

// Session attributes that ask for parameter encryption (TPMA_SESSION).
const (
	attrDecrypt = 0x20 // the command's first parameter is encrypted
	attrEncrypt = 0x40 // the response's first parameter is encrypted
)

// EncryptedResponses counts the recorded commands with code cc (which has
// the given number of handles) and, of those, the ones that did not ask
// the TPM to encrypt the response's first parameter (no session with the
// encrypt attribute).
func (r *Recorder) EncryptedResponses(cc tpm2.TPMCC, handles int) (n, inClear int) {
	return r.countAttr(cc, handles, attrEncrypt)
}

// EncryptedCommands is EncryptedResponses for the command's own first
// parameter (a session with the decrypt attribute).
func (r *Recorder) EncryptedCommands(cc tpm2.TPMCC, handles int) (n, inClear int) {
	return r.countAttr(cc, handles, attrDecrypt)
}

func (r *Recorder) countAttr(cc tpm2.TPMCC, handles int, attr byte) (n, without int) {
	for _, e := range r.Exchanges() {
		if len(e.Command) < 10 || tpm2.TPMCC(binary.BigEndian.Uint32(e.Command[6:10])) != cc {
			continue
		}
		n++
		if !sessionAsks(e.Command, handles, attr) {
			without++
		}
	}
	return n, without
}

// sessionAsks reads a command's authorization area: does a session set
// attr?
func sessionAsks(cmd []byte, handles int, attr byte) bool {
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
		if sessions[6+nonce]&attr != 0 {
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

// Session is one TPM2_StartAuthSession as it crossed the bus: the handle
// the TPM gave it, the key its salt was encrypted to (TPM_RH_NULL for an
// unsalted session), the bound object, and the encrypted salt itself.
// TPMKeyName is the Name a recorded TPM2_Load gave the transient TPMKey
// handle, the last before the session started (nil for another key).
type Session struct {
	Handle, TPMKey, Bind tpm2.TPMHandle
	EncryptedSalt        []byte
	TPMKeyName           []byte
}

// CommandSessions returns, for each recorded command with code cc (which
// has the given number of handles), the started sessions it used, as their
// TPM2_StartAuthSession set them up. A password authorization is not a
// started session and is left out.
func (r *Recorder) CommandSessions(cc tpm2.TPMCC, handles int) [][]Session {
	var out [][]Session
	live := map[tpm2.TPMHandle]Session{}
	loaded := map[tpm2.TPMHandle][]byte{}
	for _, e := range r.Exchanges() {
		c := e.Command
		if len(c) < 10 {
			continue
		}
		switch tpm2.TPMCC(binary.BigEndian.Uint32(c[6:10])) {
		case tpm2.TPMCCLoad:
			if h, name, ok := loadedName(e.Response); ok {
				loaded[h] = name
			}
		case tpm2.TPMCCStartAuthSession:
			if s, ok := startedSession(e); ok {
				s.TPMKeyName = loaded[s.TPMKey]
				live[s.Handle] = s
			}
		case cc:
			var used []Session
			for _, h := range sessionHandles(c, handles) {
				if s, ok := live[h]; ok {
					used = append(used, s)
				}
			}
			out = append(out, used)
		}
	}
	return out
}

// startedSession parses a successful TPM2_StartAuthSession.
func startedSession(e Exchange) (Session, bool) {
	c, rsp := e.Command, e.Response
	if len(c) < 18 || len(rsp) < 14 || binary.BigEndian.Uint32(rsp[6:10]) != 0 {
		return Session{}, false
	}
	s := Session{
		Handle: tpm2.TPMHandle(binary.BigEndian.Uint32(rsp[10:14])),
		TPMKey: tpm2.TPMHandle(binary.BigEndian.Uint32(c[10:14])),
		Bind:   tpm2.TPMHandle(binary.BigEndian.Uint32(c[14:18])),
	}
	params := c[18:]
	if binary.BigEndian.Uint16(c[0:2]) == uint16(tpm2.TPMSTSessions) && len(params) >= 4 {
		params = params[min(len(params), 4+int(binary.BigEndian.Uint32(params))):]
	}
	if _, rest, ok := sized(params); ok {
		s.EncryptedSalt, _, _ = sized(rest)
	}
	return s, true
}

// loadedName parses a successful TPM2_Load response: the object's handle
// and Name.
func loadedName(rsp []byte) (tpm2.TPMHandle, []byte, bool) {
	if len(rsp) < 14 || binary.BigEndian.Uint32(rsp[6:10]) != 0 {
		return 0, nil, false
	}
	h := tpm2.TPMHandle(binary.BigEndian.Uint32(rsp[10:14]))
	params := rsp[14:]
	if binary.BigEndian.Uint16(rsp[0:2]) == uint16(tpm2.TPMSTSessions) {
		if len(params) < 4 {
			return 0, nil, false
		}
		params = params[4:]
	}
	name, _, ok := sized(params)
	return h, bytes.Clone(name), ok
}

// sessionHandles lists the session handles of a command's authorization
// area.
func sessionHandles(cmd []byte, handles int) []tpm2.TPMHandle {
	if binary.BigEndian.Uint16(cmd[0:2]) != uint16(tpm2.TPMSTSessions) || len(cmd) < 14+4*handles {
		return nil
	}
	area := cmd[10+4*handles:]
	size := int(binary.BigEndian.Uint32(area))
	if len(area) < 4+size {
		return nil
	}
	var out []tpm2.TPMHandle
	for s := area[4 : 4+size]; len(s) >= 4; {
		out = append(out, tpm2.TPMHandle(binary.BigEndian.Uint32(s)))
		_, rest, ok := sized(s[4:]) // nonce, then the attributes byte
		if !ok || len(rest) < 1 {
			break
		}
		_, rest, ok = sized(rest[1:])
		if !ok {
			break
		}
		s = rest
	}
	return out
}

// sized reads a TPM2B: a 2-byte size and that many bytes.
func sized(b []byte) (value, rest []byte, ok bool) {
	if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
		return nil, nil, false
	}
	n := 2 + int(binary.BigEndian.Uint16(b))
	return b[2:n], b[n:], true
}
