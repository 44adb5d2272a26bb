package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultDevice is the kernel's TPM resource manager on the appliance.
const DefaultDevice = "/dev/tpmrm0"

// ErrSimulatorUnavailable is returned for the "sim" spec in a build without
// cgo, such as the appliance binary.
var ErrSimulatorUnavailable = errors.New(`the in-process TPM simulator ("sim") is only in cgo builds`)

// Open connects to the TPM named by spec: a device path such as
// /dev/tpmrm0, "swtpm:HOST:PORT" for swtpm's TCP data port, or "sim" for a
// fresh in-process simulator. The caller closes it.
func Open(spec string) (transport.TPMCloser, error) {
	var (
		t   transport.TPMCloser
		err error
	)
	switch {
	case spec == "sim":
		t, err = openSimulator()
	case strings.HasPrefix(spec, "swtpm:"):
		t, err = openSwtpm(strings.TrimPrefix(spec, "swtpm:"))
	case strings.HasPrefix(spec, "/"):
		t, err = linuxtpm.Open(spec)
	default:
		return nil, fmt.Errorf("unknown TPM %q: want a device path, swtpm:HOST:PORT or sim", spec)
	}
	if err != nil {
		return nil, fmt.Errorf("opening TPM %s: %w", spec, err)
	}
	return withRetry(t), nil
}

// swtpmTimeout bounds one command round trip to swtpm. Key generation on a
// loaded machine takes well under a second; a minute means swtpm is gone.
const swtpmTimeout = time.Minute

// maxResponse caps what we read from a TPM. TPM 2.0 responses are at most a
// few KiB (MAX_RESPONSE_SIZE is 4096 on common TPMs); a larger length field
// is a broken or hostile peer.
const maxResponse = 64 << 10

// swtpmConn speaks the raw TPM protocol on swtpm's data port: a command
// goes out as is, a response comes back with its length in the header.
type swtpmConn struct {
	conn net.Conn
}

func openSwtpm(hostPort string) (transport.TPMCloser, error) {
	if _, _, err := net.SplitHostPort(hostPort); err != nil {
		return nil, fmt.Errorf("want swtpm:HOST:PORT: %w", err)
	}
	conn, err := net.DialTimeout("tcp", hostPort, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &swtpmConn{conn: conn}, nil
}

// Send implements transport.TPM.
func (s *swtpmConn) Send(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(swtpmTimeout)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, err
	}
	return readResponse(s.conn)
}

// Close implements io.Closer.
func (s *swtpmConn) Close() error { return s.conn.Close() }

// Conn returns the underlying connection, for APIs that want an
// io.ReadWriter (go-tpm-tools' legacy client).
func (s *swtpmConn) Conn() net.Conn { return s.conn }

// readResponse reads one TPM response: a 10-byte header whose bytes 2..6
// are the total size, then the rest.
func readResponse(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("reading TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("TPM response claims %d bytes", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(r, rsp[10:]); err != nil {
		return nil, fmt.Errorf("reading TPM response: %w", err)
	}
	return rsp, nil
}
