package tpm_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestBreakShareLeavesThroughRewrapUnderTheEK: a share-mode blob is a
// duplicate under the EK with only an outer wrapper. TPM2_Rewrap to
// TPM_RH_NULL needs only the EK's USER authorization, PolicySecret(
// endorsement) with the appliance's empty endorsement authorization, and
// never looks at the sealed object's PCR policy, the version floor, the
// button or the ledger: booted into another image, anyone with the device
// and its data partition reads the share, and it crosses the TPM bus in
// the clear. The share must not come out.
func TestBreakShareLeavesThroughRewrapUnderTheEK(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s := secret(t)
		blob := sealAndReparse(t, ek, pcrs, s)
		anotherImage(t, conn)
		if _, err := tpm.Unseal(conn, blob); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("unseal in another image: %v, want the PCR mismatch", err)
		}
		pub, dup, seed := tpm.WrappedOf(blob)
		name, err := tpm2.ObjectName(&pub)
		if err != nil {
			t.Fatal(err)
		}
		sess, closeSession := endorsementSession(t, conn)
		defer closeSession()
		out, err := rewrapToNull(conn, tpm.EKHandle(ek), sess.Handle(), dup, name.Buffer, seed)
		if err != nil {
			t.Logf("TPM2_Rewrap refused: %v", err)
			return
		}
		if bytes.Contains(out, s) {
			t.Errorf("the share came out of TPM2_Rewrap under the EK in the clear, in an image its PCR policy refuses (%d bytes of sensitive area)", len(out))
		}
	})
}

// TestBreakScopedShareLeavesThroughRewrapUnderTheEK: a version 3 scoped
// key's gate key is a duplicate under the EK like any other, so
// TPM2_Rewrap strips it in any image; with the gate key's private scalar
// the attacker imports a copy of the gate key with no policy under the
// EK, and TPM2_Rewrap under that copy strips the ZGen object: s in the
// clear, with no gate, no partial, no ledger entry. Scoped mode's promise
// (the share never leaves the TPM, only partials of named envelopes do)
// must hold.
func TestBreakScopedShareLeavesThroughRewrapUnderTheEK(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s, key, _ := scopedShare(t, ek, pcrs)
		anotherImage(t, conn)
		if _, err := tpm.Partials(conn, key, [][]byte{randomPoint(t)}, nil); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("partials in another image: %v, want the PCR mismatch", err)
		}
		gatePub, gateDup, gateSeed, zgenPub, zgenDup, zgenSeed := tpm.ScopedWrapped(key)
		gateName, _ := tpm2.ObjectName(&gatePub)

		sess, closeSession := endorsementSession(t, conn)
		defer closeSession()
		out, err := rewrapToNull(conn, tpm.EKHandle(ek), sess.Handle(), gateDup, gateName.Buffer, gateSeed)
		if err != nil {
			t.Logf("TPM2_Rewrap of the gate key refused: %v", err)
			return
		}
		sens, err := tpm2.Unmarshal[tpm2.TPMTSensitive](out[2:])
		if err != nil {
			t.Fatalf("the stripped gate key: %v", err)
		}
		gatePriv, err := sens.Sensitive.ECC()
		if err != nil {
			t.Fatal(err)
		}

		// A copy of the gate key: the same scalar, no policy, the empty
		// password.
		clonePub := gatePub
		clonePub.ObjectAttributes.UserWithAuth = true
		clonePub.AuthPolicy = tpm2.TPM2BDigest{}
		seedValue := make([]byte, 32)
		rand.Read(seedValue)
		dup, seed, err := tpm.WrapFor(ptr(tpm.EKPublic(ek)), clonePub, tpm2.TPMTSensitive{
			SensitiveType: tpm2.TPMAlgECC,
			SeedValue:     tpm2.TPM2BDigest{Buffer: seedValue},
			Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: gatePriv.Buffer}),
		})
		if err != nil {
			t.Fatal(err)
		}
		// A fresh session for each command: the hand-made Rewrap moved
		// the first one's nonces on, and each use resets a policy session.
		ekAuth := func() tpm2.AuthHandle {
			sess, closeSession := endorsementSession(t, conn)
			t.Cleanup(func() { closeSession() })
			return tpm2.AuthHandle{Handle: tpm.EKHandle(ek), Name: tpm2.TPM2BName{Buffer: ek.Name()}, Auth: sess}
		}
		imp, err := tpm2.Import{ParentHandle: ekAuth(), ObjectPublic: tpm2.New2B(clonePub),
			Duplicate: tpm2.TPM2BPrivate{Buffer: dup}, InSymSeed: tpm2.TPM2BEncryptedSecret{Buffer: seed},
			Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}}.Execute(conn)
		if err != nil {
			t.Fatalf("importing the copy of the gate key: %v", err)
		}
		clone, err := tpm2.Load{ParentHandle: ekAuth(), InPrivate: imp.OutPrivate, InPublic: tpm2.New2B(clonePub)}.Execute(conn)
		if err != nil {
			t.Fatalf("loading the copy of the gate key: %v", err)
		}
		defer flushHandle(conn, clone.ObjectHandle)
		zgenName, _ := tpm2.ObjectName(&zgenPub)
		out, err = rewrapToNull(conn, clone.ObjectHandle, 0, zgenDup, zgenName.Buffer, zgenSeed)
		if err != nil {
			t.Logf("TPM2_Rewrap of the ZGen object under the copy refused: %v", err)
			return
		}
		if bytes.Contains(out, s) {
			t.Errorf("the scoped share s came out in the clear through TPM2_Rewrap, in an image the gate refuses")
		}
	})
}

// TestBreakScopedV2ShareLeavesThroughRewrapUnderTheEK: a version 2 scoped
// key's objects are duplicates under the EK itself, whose policy the
// objects' own gates do not reach: one TPM2_Rewrap gives s.
func TestBreakScopedV2ShareLeavesThroughRewrapUnderTheEK(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s := secret(t)
		s[0] &= 0x7f // below the group order
		key, err := tpm.SealScopedV2(ek, pcrs, testVersion, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		anotherImage(t, conn)
		_, _, _, zgenPub, zgenDup, zgenSeed := tpm.ScopedWrapped(key)
		name, _ := tpm2.ObjectName(&zgenPub)
		sess, closeSession := endorsementSession(t, conn)
		defer closeSession()
		out, err := rewrapToNull(conn, tpm.EKHandle(ek), sess.Handle(), zgenDup, name.Buffer, zgenSeed)
		if err != nil {
			t.Logf("TPM2_Rewrap refused: %v", err)
			return
		}
		if bytes.Contains(out, s) {
			t.Errorf("the version 2 scoped share came out in the clear through TPM2_Rewrap under the EK, in an image its gate refuses")
		}
	})
}
