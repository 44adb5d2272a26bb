package tpm_test

import (
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// What a process that died mid-operation leaves on a TPM without a
// resource manager is flushed, and only that.
func TestFlushStaleEmptiesLeftovers(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		if _, err := (tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}).Execute(conn); err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.StartAuthSession{TPMKey: tpm2.TPMRHNull, Bind: tpm2.TPMRHNull, SessionType: tpm2.TPMSEHMAC,
			Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}, AuthHash: tpm2.TPMAlgSHA256,
			NonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)}}).Execute(conn); err != nil {
			t.Fatal(err)
		}
		n, err := tpm.FlushStale(conn)
		if err != nil || n != 2 {
			t.Fatalf("FlushStale = %d, %v; want the object and the session", n, err)
		}
		if n, err := tpm.FlushStale(conn); err != nil || n != 0 {
			t.Fatalf("a second FlushStale = %d, %v; want nothing left", n, err)
		}
	})
}
