package main

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
)

// readCertPool reads a PEM file of one or more certificates.
func readCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate: %s", path, looksLike(bytes.TrimLeft(data, " \t\r\n"), "it is not PEM"))
	}
	return pool, nil
}
