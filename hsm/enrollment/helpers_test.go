package enrollment_test

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/custodian-project/custodian/tpm"
)

func otherEK(t *testing.T) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tpm.NewEK(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return ek.MarshalPKIX()
}
