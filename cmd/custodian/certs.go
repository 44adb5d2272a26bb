package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/custodian-project/custodian/hsm/certfile"
)

// readCertPool reads a file of one or more CA certificates (PEM, with any
// explanatory text, or DER) into a pool.
func readCertPool(path string) (*x509.CertPool, error) {
	data, err := readCapped(path, maxCertFile)
	if err != nil {
		return nil, err
	}
	pool, err := certfile.Pool(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pool, nil
}

// readCertificates reads a file of one or more certificates (PEM, with any
// explanatory text, or DER).
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := readCapped(path, maxCertFile)
	if err != nil {
		return nil, err
	}
	certs, err := certfile.Certificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// loadKeyPair reads a certificate chain file as readCertificates does and
// its PEM private key: a TLS certificate as openssl ca writes it, text
// included.
func loadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	certs, err := readCertificates(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := readCapped(keyPath, maxCertFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certfile.PEM(certs...), key)
}
