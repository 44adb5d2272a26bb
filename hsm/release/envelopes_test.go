package release

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// TestCheckEnvelopesNamesTheForgedEnvelopeOfAList: the device checks a
// list's seal proofs together; a requester-made envelope among 1,000
// honest ones is refused as envelope_unproven, named by its place in the
// list, whichever forgery it is.
func TestCheckEnvelopesNamesTheForgedEnvelopeOfAList(t *testing.T) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := escrow.Public{KeyID: "2026-11", Mode: escrow.ModeScoped, PublicKey: priv.PublicKey().Bytes()}
	b := &escrow.Bundle{Escrow: pub}
	envs := make([][]byte, 1000)
	refs := make([]warrant.EnvelopeRef, len(envs))
	for i := range envs {
		if envs[i], err = escrow.Seal(&pub, "alice@example.org", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		env, err := escrow.ParseEnvelope(envs[i])
		if err != nil {
			t.Fatal(err)
		}
		refs[i] = env.Ref()
	}
	list, err := warrant.ListOf(refs)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := CheckEnvelopes(list, b); code != "" || err != nil {
		t.Fatalf("honest envelopes: %s %v", code, err)
	}
	for k := range 7 {
		at := 100 + 111*k
		// Made from the envelope it replaces, so that no envelope is named twice.
		f := escrowtest.Forgeries(t, envs[at], envs[at+1])[k]
		if f.Ref.KeyID != pub.KeyID {
			continue // another key ID's envelope is not this bundle's to check
		}
		forged := append([]warrant.EnvelopeRef(nil), refs...)
		forged[at] = f.Ref
		list, err := warrant.ListOf(forged)
		if err != nil {
			t.Fatal(err)
		}
		code, err := CheckEnvelopes(list, b)
		if code != CodeUnprovenEnvelope || !errors.Is(err, escrow.ErrUnproven) || !strings.HasPrefix(err.Error(), fmt.Sprintf("envelope %d of key ID", at+1)) {
			t.Errorf("%s at %d: %s %v", f.Name, at+1, code, err)
		}
	}
}
