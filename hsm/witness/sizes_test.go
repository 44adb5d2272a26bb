package witness_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/witness"
)

// TestInvariantCosignedCheckpointFitsEveryReader: a policy the escrow
// file may name (Check passes: at most 16 witnesses, names of at most
// MaxNameLen) yields, once all its witnesses cosigned, a checkpoint that
// VerifyQuorum (the agency) and ledger.VerifyCheckpoint (every auditor
// tool reading the served checkpoint) both accept; a longer name is
// refused when the file is read, before any release.
func TestInvariantCosignedCheckpointFitsEveryReader(t *testing.T) {
	if witness.MaxCosignedSize != ledger.MaxCheckpointSize {
		t.Fatalf("the agency's cap %d and the auditors' cap %d differ", witness.MaxCosignedSize, ledger.MaxCheckpointSize)
	}
	skey, vkey := logKeys(t)
	l := newLog(t, skey)
	l.append(t, "e0")
	signed := l.checkpoint(t)
	text := string(signed[:bytes.Index(signed, []byte("\n\n"))+1])
	var p witness.Policy
	cosigned := bytes.Clone(signed)
	for i := range witness.MaxWitnesses {
		prefix := fmt.Sprintf("witness.test/%03d-", i)
		s := cosignatureSigner(t, prefix+strings.Repeat("n", witness.MaxNameLen-len(prefix)))
		p.Witnesses = append(p.Witnesses, witness.Witness{Key: s.Verifier().String(), URL: "http://w.example"})
		one, _ := note.Sign(&note.Note{Text: text}, s)
		cosigned = append(cosigned, one[len(text)+1:]...)
	}
	p.Quorum = witness.MaxWitnesses
	if err := p.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if _, _, err := witness.VerifyQuorum(cosigned, p); err != nil {
		t.Fatalf("VerifyQuorum (%d bytes): %v", len(cosigned), err)
	}
	if _, err := ledger.VerifyCheckpoint(cosigned, vkey); err != nil {
		t.Fatalf("a %d-byte checkpoint the quorum cosigned is refused by the auditors' check: %v", len(cosigned), err)
	}

	long := cosignatureSigner(t, "witness.test/"+strings.Repeat("w", witness.MaxNameLen))
	p = witness.Policy{Witnesses: []witness.Witness{{Key: long.Verifier().String(), URL: "http://w.example"}}, Quorum: 1}
	if err := p.Check(); err == nil || !strings.Contains(err.Error(), "fits the checkpoint") {
		t.Fatalf("Check accepted a %d-character witness name: %v", len(long.Name()), err)
	}
}

func cosignatureSigner(t *testing.T, name string) *torchwood.CosignatureSigner {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := torchwood.NewCosignatureSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
