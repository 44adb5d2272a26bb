package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/custodian-project/custodian/tpm"
)

// sealWithoutPanic runs seal and turns a panic into an error, so that a
// test can name what it got.
func sealWithoutPanic(seal func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panicked: %v", r)
		}
	}()
	return seal()
}

// TestSealRefusesAnImportKeyItCannotWrapFor: an ImportKey that
// NewImportKey did not make (the zero value of the exported type) has no
// key to wrap for. Sealing to it is an error, never a panic.
func TestSealRefusesAnImportKeyItCannotWrapFor(t *testing.T) {
	pcr := sha256.Sum256([]byte("image"))
	pcrs := tpm.PCRValues{8: pcr[:]}
	share := bytes.Repeat([]byte{7}, 32)
	for name, seal := range map[string]func() error{
		"Seal": func() error {
			_, err := tpm.Seal(&tpm.ImportKey{}, pcrs, 1, share)
			return err
		},
		"SealScoped": func() error {
			_, err := tpm.SealScoped(&tpm.ImportKey{}, pcrs, 1, share, nil)
			return err
		},
	} {
		err := sealWithoutPanic(seal)
		if err == nil {
			t.Errorf("%s sealed to a zero ImportKey", name)
		} else if bytes.HasPrefix([]byte(err.Error()), []byte("panicked")) {
			t.Errorf("%s: %v; want an error", name, err)
		}
	}
}
