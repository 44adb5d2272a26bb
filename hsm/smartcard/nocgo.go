//go:build !cgo

package smartcard

import (
	"crypto"
	"crypto/x509"
	"io"
)

// Key is never returned without cgo; it exists so callers build the same.
type Key struct{}

// Supported reports ErrNoCgo: this build cannot load a PKCS#11 module.
func Supported() error { return ErrNoCgo }

// Open always fails without cgo.
func Open(module string, uri URI, pin string, cert *x509.Certificate) (*Key, error) {
	return nil, ErrNoCgo
}

// The methods of Key exist so that callers compile; Open never returns one.

func (k *Key) Public() crypto.PublicKey                                  { return nil }
func (k *Key) Certificate() *x509.Certificate                            { return nil }
func (k *Key) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, ErrNoCgo }
func (k *Key) AlwaysAuthenticate() bool                                  { return false }
func (k *Key) Close() error                                              { return nil }
