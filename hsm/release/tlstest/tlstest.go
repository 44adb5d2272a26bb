// Package tlstest makes the throwaway TLS PKI that the demo and the tests
// serve with: a server CA and a server certificate for the loopback
// addresses, and a court officers' CA with one officer's client
// certificate. The shapes are the ones docs/operator.md makes with openssl
// (ECDSA P-256; serverAuth on the server, clientAuth on the officer), so
// the demo and the tests take the path a device takes. Nothing here is for
// a device: its keys are written unencrypted to the directory given.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI names the PEM files Write made.
type PKI struct {
	ServerCA   string // what clients pin (--ca)
	ServerCert string // serve --tls-cert
	ServerKey  string // serve --tls-key (0600)
	OfficerCA  string // serve --client-ca
	Cert       string // the officer's client certificate (--client-cert)
	Key        string // its key (--client-key, 0600)
	// OtherCert and OtherKey are a second officer's, of the same CA (the
	// officer of another court the appliance serves).
	OtherCert, OtherKey string
}

// Write makes the two CAs and their certificates in dir, valid from an
// hour before now for a week, and names the files. The server certificate
// is for 127.0.0.1, ::1 and localhost.
func Write(dir string, now time.Time) (*PKI, error) {
	p := &PKI{
		ServerCA: filepath.Join(dir, "server-ca.pem"), ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey: filepath.Join(dir, "server.key"), OfficerCA: filepath.Join(dir, "officer-ca.pem"),
		Cert: filepath.Join(dir, "officer.pem"), Key: filepath.Join(dir, "officer.key"),
		OtherCert: filepath.Join(dir, "officer-b.pem"), OtherKey: filepath.Join(dir, "officer-b.key"),
	}
	server := &x509.Certificate{Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if err := issuePair(p.ServerCA, "Custodian Server CA", now, leaf{server, p.ServerCert, p.ServerKey}); err != nil {
		return nil, err
	}
	officer := &x509.Certificate{Subject: pkix.Name{CommonName: "Court Officer Grace Hopper", Organization: []string{"District Court"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	other := &x509.Certificate{Subject: pkix.Name{CommonName: "Court Officer Alan Turing", Organization: []string{"Another Court"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if err := issuePair(p.OfficerCA, "Court Officers CA", now, leaf{officer, p.Cert, p.Key}, leaf{other, p.OtherCert, p.OtherKey}); err != nil {
		return nil, err
	}
	return p, nil
}

// leaf is a certificate to issue from tmpl, written to certFile with its
// key in keyFile.
type leaf struct {
	tmpl              *x509.Certificate
	certFile, keyFile string
}

// issuePair makes a CA (certificate to caFile; its key is dropped) and
// the leaves under it.
func issuePair(caFile, caName string, now time.Time, leaves ...leaf) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ca := &x509.Certificate{Subject: pkix.Name{CommonName: caName}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caCert, err := create(ca, nil, &caKey.PublicKey, caKey, now)
	if err != nil {
		return err
	}
	if err := writePEM(caFile, "CERTIFICATE", caCert.Raw, 0o644); err != nil {
		return err
	}
	for _, l := range leaves {
		if err := issueLeaf(l, caCert, caKey, now); err != nil {
			return err
		}
	}
	return nil
}

func issueLeaf(l leaf, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) error {
	tmpl := l.tmpl
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.BasicConstraintsValid = true
	cert, err := create(tmpl, caCert, &key.PublicKey, caKey, now)
	if err != nil {
		return err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(l.certFile, "CERTIFICATE", cert.Raw, 0o644); err != nil {
		return err
	}
	return writePEM(l.keyFile, "PRIVATE KEY", pkcs8, 0o600)
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode)
}

// create signs tmpl with key under parent (nil: self-signed).
func create(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey, now time.Time) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(7*24*time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
