package witness_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
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

// TestDistinctKeysWhoseBase64HoldsAPlusAreNotTheSameKey: a verifier key's
// base64 may hold '+'; two witnesses whose keys end alike after one are
// distinct witnesses, never refused as one key listed twice.
func TestDistinctKeysWhoseBase64HoldsAPlusAreNotTheSameKey(t *testing.T) {
	var p witness.Policy
	tails := map[string]bool{}
	for i := 0; len(p.Witnesses) < 2 && i < 1<<16; i++ {
		s := cosignatureSigner(t, fmt.Sprintf("witness.test/%d", i))
		vkey := s.Verifier().String()
		j := strings.LastIndexByte(vkey, '+')
		tail := vkey[j:]
		if len(tail) != 2 || (len(p.Witnesses) == 1 && !tails[tail]) {
			continue // wanted: a '+' second to last in the base64, and the same last character twice
		}
		tails[tail] = true
		p.Witnesses = append(p.Witnesses, witness.Witness{Key: vkey, URL: "http://w.example"})
	}
	if len(p.Witnesses) < 2 {
		t.Fatal("no two keys with a '+' at the same place near the end of their base64 in 65536 tries")
	}
	p.Quorum = 2
	if err := p.Check(); err != nil {
		t.Fatalf("two distinct witness keys, %s and %s: %v", p.Witnesses[0].Key, p.Witnesses[1].Key, err)
	}
}
