package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/release/tlstest"
)

// testListener is a guarded listener on loopback with the appliance's TLS
// configuration, and a client configuration that trusts it. Accepted
// connections are held open until the test ends.
func testListener(t *testing.T, conns int, timeout time.Duration) (*guardedListener, *tls.Config, *bytes.Buffer) {
	t.Helper()
	pki, err := tlstest.Write(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(pki.ServerCA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	l := newGuardedListener(tcp, release.ServerTLS(pair, nil), slog.New(slog.NewTextHandler(&logged, nil)), conns, timeout)
	t.Cleanup(func() { l.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return l, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1"}, &logged
}

// TestInvariantListenerCapsConnectionsAndHandshakeTime: the daemon's
// listener holds at most its cap of connections — one more waits in the
// kernel's queue until one closes — and drops a handshake that does not
// finish in time, counting it (and logging the count in one line).
func TestInvariantListenerCapsConnectionsAndHandshakeTime(t *testing.T) {
	l, client, _ := testListener(t, 2, 30*time.Second)
	addr := l.Addr().String()
	var stalled []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stalled = append(stalled, c)
	}
	done := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", addr, client)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a third connection was served while two stalled handshakes held the cap of 2 (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	stalled[0].Close()
	if err := <-done; err != nil {
		t.Fatalf("the waiting connection, once a slot was free: %v", err)
	}

	// A handshake that stalls is dropped after the timeout and counted.
	l2, _, logged2 := testListener(t, 4, 200*time.Millisecond)
	c, err := net.Dial("tcp", l2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}) // a record header, then nothing
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the server kept a stalled handshake open")
		}
	}
	waitCounted(t, l2, "timeout", 1)
	l2.Close()
	if !strings.Contains(logged2.String(), "1 TLS handshakes failed") || !strings.Contains(logged2.String(), "timeout=1") {
		t.Errorf("the failed handshake is not in the log's count:\n%s", logged2)
	}
}

// waitCounted waits until the listener has counted n failures of kind:
// the count is made after the server drops the connection.
func waitCounted(t *testing.T, l *guardedListener, kind string, n uint64) {
	t.Helper()
	for range 1000 {
		if l.Failed()[kind] == n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("counted %v, want %s=%d", l.Failed(), kind, n)
}

// TestHandshakeFailureKinds: what clients do wrong maps onto a few names.
func TestHandshakeFailureKinds(t *testing.T) {
	l, _, _ := testListener(t, 8, 2*time.Second)
	addr := l.Addr().String()
	send := func(b []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if b != nil {
			c.Write(b)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.ReadAll(c)
		}
	}
	send(nil)
	waitCounted(t, l, "closed", 1)
	send([]byte("GET / HTTP/1.0\r\n\r\n"))
	waitCounted(t, l, "not_tls", 1)
	old, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err == nil {
		old.Close()
		t.Fatal("a TLS 1.2 client was served")
	}
	waitCounted(t, l, "version", 1)
}
