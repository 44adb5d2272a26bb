package tpmtest

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/custodian-project/custodian/tpm"
)

// RandomEK returns an RSA-2048 endorsement key that belongs to no TPM: a
// stand-in for "another device".
func RandomEK(t testing.TB) *tpm.EK {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tpm.NewEK(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return ek
}
