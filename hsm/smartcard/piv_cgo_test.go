//go:build cgo

package smartcard_test

import (
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/custodian-project/custodian/hsm/smartcard/pivtest"
)

// TestInvariantPIVSignNeedsContextLogin: through OpenSC, a slot 9c key
// logged in once (CKU_USER) still cannot sign: C_Sign without the
// context-specific login fails with CKR_USER_NOT_LOGGED_IN, and the card
// signs nothing.
func TestInvariantPIVSignNeedsContextLogin(t *testing.T) {
	c := newCourt(t)
	card := judgeCards(t, c, [2]string{"Judge Ada", pivtest.ECDSAP256})[0]

	ctx := pkcs11.New(pivtest.Module)
	if ctx == nil {
		t.Fatal("cannot load OpenSC's module")
	}
	defer ctx.Destroy()
	if err := ctx.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer ctx.Finalize()
	slots, err := ctx.GetSlotList(true)
	if err != nil || len(slots) != 1 {
		t.Fatalf("slots %v: %v", slots, err)
	}
	session, err := ctx.OpenSession(slots[0], pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctx.Login(session, pkcs11.CKU_USER, pivPIN); err != nil {
		t.Fatal(err)
	}
	if err := ctx.FindObjectsInit(session, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "SIGN key"),
	}); err != nil {
		t.Fatal(err)
	}
	keys, _, err := ctx.FindObjects(session, 2)
	ctx.FindObjectsFinal(session)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v: %v", keys, err)
	}
	if err := ctx.SignInit(session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, keys[0]); err != nil {
		t.Fatal(err)
	}
	_, err = ctx.Sign(session, make([]byte, 32))
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) {
		t.Fatalf("C_Sign without a context-specific login: %v, want CKR_USER_NOT_LOGGED_IN", err)
	}
	if card.Signatures() != 0 {
		t.Fatal("the card signed")
	}
}
