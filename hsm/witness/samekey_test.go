package witness_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/witness"
)

// TestInvariantOneWitnessKeyCountsOnce: one witness key listed under two
// names is refused by Check, and VerifyQuorum counts one key once even
// under two names (cosignature/v1 does not sign the name, so one
// witness's line can be relabelled).
func TestInvariantOneWitnessKeyCountsOnce(t *testing.T) {
	skey, _ := logKeys(t)
	l := newLog(t, skey)
	l.append(t, "e0", "e1")
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	sa, err := torchwood.NewCosignatureSigner("witness.test/a", priv)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := torchwood.NewCosignatureSigner("witness.test/b", priv) // same key
	p := witness.Policy{Witnesses: []witness.Witness{
		{Key: sa.Verifier().String(), URL: "http://a.example"},
		{Key: sb.Verifier().String(), URL: "http://b.example"},
	}, Quorum: 2}
	if err := p.Check(); err == nil || !strings.Contains(err.Error(), "same key") {
		t.Errorf("Check accepted one key under two names: %v", err)
	}
	signed := l.checkpoint(t)
	text := signed[:bytes.Index(signed, []byte("\n\n"))+1]
	one, err := note.Sign(&note.Note{Text: string(text)}, sa)
	if err != nil {
		t.Fatal(err)
	}
	line := one[len(text)+1:] // "— witness.test/a base64(keyhash||ts||sig)\n"
	raw, _ := base64.StdEncoding.DecodeString(strings.Fields(string(line))[2])
	hb := sb.Verifier().KeyHash()
	raw[0], raw[1], raw[2], raw[3] = byte(hb>>24), byte(hb>>16), byte(hb>>8), byte(hb)
	relabel := "— witness.test/b " + base64.StdEncoding.EncodeToString(raw) + "\n"
	forged := append(append(bytes.Clone(signed), line...), relabel...)
	if _, names, err := witness.VerifyQuorum(forged, p); err == nil {
		t.Errorf("quorum 2 met by one witness's cosignature under two names: %v", names)
	}
	p.Quorum = 1
	if _, names, err := witness.VerifyQuorum(forged, p); err != nil || len(names) != 1 {
		t.Errorf("the one witness's cosignature: names %v, err %v; want it counted once", names, err)
	}
}
