package tpmtest

import (
	"crypto/rand"
	"crypto/rsa"
	"github.com/google/go-tpm/tpm2/transport"
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

// RandomImportKey is an import key of a TPM that does not exist: a fresh
// RSA-2048 key in the import key template.
func RandomImportKey(t testing.TB) *tpm.ImportKey {
	t.Helper()
	k, err := tpm.NewImportKey(RandomEK(t).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ProvisionKeys gives the TPM its RSA EK and import key, as enrollment
// does, and returns both.
func ProvisionKeys(t testing.TB, conn transport.TPM) (*tpm.EK, *tpm.ImportKey) {
	t.Helper()
	ek, err := tpm.ProvisionEK(conn, tpm.EKRSA2048)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm.ProvisionImportKey(conn, tpm.EKRSA2048)
	if err != nil {
		t.Fatal(err)
	}
	return ek, key
}
