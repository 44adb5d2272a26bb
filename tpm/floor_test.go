package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantNoDowngradeTheFloorOnlyRises: a blob, a scoped key and an
// approval sealed for security version 1 open while the floor is 1 and
// stop, with a DowngradeError, once it is 2; version 2 keeps opening. The
// floor does not go down: not by asking for less, not by deleting and
// defining it again, not by clearing the TPM.
func TestInvariantNoDowngradeTheFloorOnlyRises(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		if floor, err := tpm.DefineFloor(conn); err != nil || floor != 1 {
			t.Fatalf("a fresh TPM's floor: %d, %v; want 1", floor, err)
		}
		ek, pcrs := bootedDevice(t, conn)
		old := sealAt(t, ek, pcrs, 1)
		current := sealAt(t, ek, pcrs, 2)
		approver, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		s, _, _ := scopedShare(t, ek, pcrs)
		oldKey, err := tpm.SealScoped(ek, pcrs, 1, s, &approver.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		r := randomPoint(t)
		for _, b := range []*tpm.Blob{old, current} {
			if _, err := tpm.Unseal(conn, b); err != nil {
				t.Fatalf("version %d under floor 1: %v", b.Version, err)
			}
		}
		if _, err := tpm.Partials(conn, oldKey, [][]byte{r}, nil); err != nil {
			t.Fatalf("scoped key of version 1 under floor 1: %v", err)
		}

		if floor, err := tpm.RaiseFloor(conn, 2); err != nil || floor != 2 {
			t.Fatalf("raising to 2: %d, %v", floor, err)
		}
		wantDowngrade(t, "blob of version 1", unsealErr(conn, old), 1, 2)
		if _, err := tpm.Unseal(conn, current); err != nil {
			t.Fatalf("version 2 under floor 2: %v", err)
		}
		_, err = tpm.Partials(conn, oldKey, [][]byte{r}, nil)
		wantDowngrade(t, "scoped key of version 1", err, 1, 2)
		_, err = tpm.Partials(conn, oldKey, [][]byte{r}, approveAt(t, approver, pcrs, 1))
		wantDowngrade(t, "approval of version 1", err, 1, 2)
		if _, err := tpm.Partials(conn, oldKey, [][]byte{r}, approveAt(t, approver, pcrs, 2)); err != nil {
			t.Fatalf("approval of version 2 under floor 2: %v", err)
		}

		if floor, err := tpm.RaiseFloor(conn, 1); err != nil || floor != 2 {
			t.Fatalf("asking for floor 1: %d, %v; want it to stay 2", floor, err)
		}
		undefineFloor(t, conn)
		if _, err := tpm.Unseal(conn, current); !errors.Is(err, tpm.ErrNoFloor) {
			t.Fatalf("without a floor: got %v, want ErrNoFloor", err)
		}
		assertRedefinedFloorNotLower(t, conn, old, 2)

		_, err = tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}.Execute(conn)
		if err != nil {
			t.Fatalf("TPM2_Clear: %v", err)
		}
		if _, err := tpm.ReadFloor(conn); !errors.Is(err, tpm.ErrNoFloor) {
			t.Fatalf("after TPM2_Clear: got %v, want ErrNoFloor", err)
		}
		// TPM2_Clear evicts the persistent keys; the endorsement seed
		// stays, so the same import key comes back.
		provisionKind(t, conn, tpm.EKRSA2048)
		assertRedefinedFloorNotLower(t, conn, old, 2)
	})
}

// TestInvariantNoDowngradeImpostorFloorOpensNothing: an ordinary NV area
// at the floor's handle, holding 1 and writable back to anything, is not
// the floor: the policy names the counter's Name, so nothing opens.
func TestInvariantNoDowngradeImpostorFloorOpensNothing(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		blob := sealAt(t, ek, pcrs, testVersion)
		if _, err := tpm.Unseal(conn, blob); err != nil {
			t.Fatal(err)
		}
		floor, err := tpm.ReadFloor(conn)
		if err != nil {
			t.Fatal(err)
		}
		undefineFloor(t, conn)
		t.Cleanup(func() {
			undefine(t, conn, tpm.FloorIndex)
			if _, err := tpm.DefineFloor(conn); err != nil {
				t.Error(err)
			}
		})
		impostor := tpm2.TPMSNVPublic{
			NVIndex: tpm.FloorIndex, NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{NT: tpm2.TPMNTOrdinary, AuthRead: true, AuthWrite: true, NoDA: true},
			DataSize:   8,
		}
		_, err = tpm2.NVDefineSpace{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			PublicInfo: tpm2.New2B(impostor),
		}.Execute(conn)
		if err != nil {
			t.Fatal(err)
		}
		name, err := tpm2.NVName(&impostor)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tpm2.NVWrite{
			AuthHandle: tpm2.AuthHandle{Handle: tpm.FloorIndex, Name: *name, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: tpm.FloorIndex, Name: *name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: []byte{0, 0, 0, 0, 0, 0, 0, byte(floor)}},
		}.Execute(conn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tpm.Unseal(conn, blob); err == nil {
			t.Fatal("a blob opened under an ordinary NV area posing as the floor")
		}
		if _, err := tpm.ReadFloor(conn); err == nil {
			t.Fatal("read an ordinary NV area as the floor")
		}
	})
}

func TestRaiseFloorRefusesVersionsOutOfRange(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		before := tpmtest.Floor(t, conn)
		for _, v := range []uint64{0, tpm.MaxSecurityVersion + 1} {
			if _, err := tpm.RaiseFloor(conn, v); err == nil {
				t.Errorf("raised the floor to %d", v)
			}
		}
		if after, err := tpm.ReadFloor(conn); err != nil || after != before {
			t.Fatalf("floor %d before, %d (%v) after refused raises", before, after, err)
		}
	})
}

// assertRedefinedFloorNotLower defines the floor again and checks that it
// came back at least at was, and that old still does not open.
func assertRedefinedFloorNotLower(t *testing.T, conn transport.TPM, old *tpm.Blob, was uint64) {
	t.Helper()
	floor, err := tpm.DefineFloor(conn)
	if err != nil {
		t.Fatal(err)
	}
	if floor < was {
		t.Fatalf("the floor came back at %d, below %d", floor, was)
	}
	t.Logf("floor %d defined again: came back at %d", was, floor)
	wantDowngrade(t, "blob of version 1 after redefinition", unsealErr(conn, old), old.Version, floor)
}

func sealAt(t testing.TB, ek *tpm.ImportKey, pcrs tpm.PCRValues, v uint64) *tpm.Blob {
	t.Helper()
	b, err := tpm.Seal(ek, pcrs, v, secret(t))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := tpm.ParseBlob(b.Marshal())
	if err != nil || parsed.Version != v {
		t.Fatalf("re-parsed blob: version %v, %v", parsed, err)
	}
	return parsed
}

func unsealErr(conn transport.TPM, b *tpm.Blob) error {
	_, err := tpm.Unseal(conn, b)
	return err
}

func wantDowngrade(t *testing.T, what string, err error, version, floor uint64) {
	t.Helper()
	var d *tpm.DowngradeError
	if !errors.As(err, &d) || !errors.Is(err, tpm.ErrDowngrade) || d.Version != version || d.Floor != floor {
		t.Fatalf("%s: got %v, want a downgrade of version %d under floor %d", what, err, version, floor)
	}
}

func approveAt(t testing.TB, key *ecdsa.PrivateKey, pcrs tpm.PCRValues, v uint64) *tpm.Approval {
	t.Helper()
	digest, err := tpm.ApprovalDigest(pcrs, v)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest)
	if err != nil {
		t.Fatal(err)
	}
	return &tpm.Approval{PCRs: pcrs, Version: v, Signature: sig}
}

func undefineFloor(t testing.TB, conn transport.TPM) {
	t.Helper()
	undefine(t, conn, tpm.FloorIndex)
	if _, err := tpm.ReadFloor(conn); !errors.Is(err, tpm.ErrNoFloor) {
		t.Fatalf("after undefining: got %v, want ErrNoFloor", err)
	}
}

// TestImagePolicyDigestFollowsItsInputs: the last digest kept is given
// back only for the same PCR values and version, and a caller changing the
// bytes it got does not change the next answer.
func TestImagePolicyDigestFollowsItsInputs(t *testing.T) {
	pcrs := tpm.PCRValues{7: bytes.Repeat([]byte{7}, 32), 8: bytes.Repeat([]byte{8}, 32)}
	digest := func(p tpm.PCRValues, v uint64) []byte {
		t.Helper()
		d, err := tpm.ImagePolicyDigest(p, v)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := digest(pcrs, 1)
	if bytes.Equal(first, digest(pcrs, 2)) {
		t.Fatal("versions 1 and 2 give the same policy")
	}
	other := tpm.PCRValues{7: bytes.Repeat([]byte{7}, 32), 8: bytes.Repeat([]byte{9}, 32)}
	if bytes.Equal(digest(other, 1), first) {
		t.Fatal("other PCR values give the same policy")
	}
	again := digest(pcrs, 1)
	if !bytes.Equal(again, first) {
		t.Fatal("the same inputs give another policy")
	}
	again[0] ^= 1
	if !bytes.Equal(digest(pcrs, 1), first) {
		t.Fatal("changing a returned digest changed the next one")
	}
}
