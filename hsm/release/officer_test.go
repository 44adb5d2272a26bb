package release

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/release/tlstest"
)

func loadPool(t *testing.T, path string) *x509.CertPool {
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

func loadPair(t *testing.T, cert, key string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestInvariantOnlyACourtOfficersCertificatePassesTheOfficerCheck: the
// check the request routes run refuses no certificate, another CA's
// officer, a server certificate (not for client authentication) and a
// certificate outside its validity, each with its code.
func TestInvariantOnlyACourtOfficersCertificatePassesTheOfficerCheck(t *testing.T) {
	now := time.Now()
	site, err := tlstest.Write(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlstest.Write(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	officers := loadPool(t, site.OfficerCA)
	state := func(cert, key string) *tls.ConnectionState {
		c := loadPair(t, cert, key)
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}}
	}
	for name, c := range map[string]struct {
		state *tls.ConnectionState
		now   time.Time
		want  Code
	}{
		"officer":            {state(site.Cert, site.Key), now, ""},
		"no TLS":             {nil, now, CodeClientCertRequired},
		"no certificate":     {&tls.ConnectionState{}, now, CodeClientCertRequired},
		"another site's":     {state(other.Cert, other.Key), now, CodeClientCertUntrusted},
		"expired":            {state(site.Cert, site.Key), now.AddDate(0, 1, 0), CodeClientCertUntrusted},
		"server certificate": {state(site.ServerCert, site.ServerKey), now, CodeClientCertUntrusted},
	} {
		t.Run(name, func(t *testing.T) {
			ref := CheckOfficer(c.state, officers, c.now)
			switch {
			case c.want == "" && ref != nil:
				t.Fatalf("refused: %v", ref)
			case c.want != "" && (ref == nil || ref.Code != c.want):
				t.Fatalf("got %v, want %s", ref, c.want)
			case ref != nil && ref.Status() != 403:
				t.Fatalf("status %d", ref.Status())
			}
		})
	}
}

// TestInvariantOfficerMustHoldTheCertificatesKey: ServerTLS asks for a
// client certificate without judging it, and still makes the client prove
// it holds the key: an officer's certificate sent with another key fails
// the handshake, over real TLS on loopback, and the server keeps serving.
func TestInvariantOfficerMustHoldTheCertificatesKey(t *testing.T) {
	site, err := tlstest.Write(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	officers := loadPool(t, site.OfficerCA)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerTLS(loadPair(t, site.ServerCert, site.ServerKey), officers))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan *tls.ConnectionState, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() != nil {
				peers <- nil
			} else {
				st := tc.ConnectionState()
				peers <- &st
			}
			tc.Close()
		}
	}()
	dial := func(cert tls.Certificate) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: loadPool(t, site.ServerCA),
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: the server judges the client's Finished after the
		// client's handshake returns; a read shows its verdict.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		return err
	}

	stolen := loadPair(t, site.Cert, site.Key)
	impostor, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	stolen.PrivateKey = impostor
	dial(stolen)
	if st := <-peers; st != nil {
		t.Fatalf("a certificate without its key was accepted: %v", st.PeerCertificates[0].Subject)
	}
	if err := dial(loadPair(t, site.Cert, site.Key)); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("officer's read: %v", err)
	}
	st := <-peers
	if st == nil || CheckOfficer(st, officers, time.Now()) != nil {
		t.Fatal("the officer with the key was not accepted")
	}
}
