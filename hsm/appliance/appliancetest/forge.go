// Package appliancetest plays an attacker who holds the appliance's SD
// card: it forges data directories from public values only, for tests
// that show the appliance refuses them.
package appliancetest

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
)

// stateKeyLabel is the public label the ledger derives its state key with.
const stateKeyLabel = "custodian state v1"

// forgerCounter is whatever counter the forger needs.
type forgerCounter struct{ v uint64 }

func (c *forgerCounter) Read() (uint64, error)             { return c.v, nil }
func (c *forgerCounter) Create() (uint64, error)           { return c.v, nil }
func (c *forgerCounter) Increment() (uint64, error)        { c.v++; return c.v, nil }
func (c *forgerCounter) IncrementChecked() (uint64, error) { return c.Increment() }

// ForgeLedgerKey replaces the data directory's checkpoint key and ledger
// with the forger's own: a key sealed, offline, to the same import key, PCRs and
// security version as the device's (read from its ledger-key.blob), and a
// ledger padded with made-up entries until its counter equals the TPM's,
// whose state binding (trust store, bundles, replay index and all) is a
// valid HMAC under the forged key's state key. It reads the TPM's counter
// (anyone may) and writes nothing to the TPM.
func ForgeLedgerKey(t testing.TB, conn transport.TPM, dir string) *Forged {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, appliance.LedgerKeyBlob))
	must(t, err)
	own, err := tpm.ParseBlob(data)
	must(t, err)
	e, err := os.ReadFile(filepath.Join(dir, appliance.EnrollmentFile))
	must(t, err)
	enrolled, err := enrollment.Parse(e)
	must(t, err)
	origin := appliance.Origin(enrolled.CustodianID)
	ek, err := tpm.ParseEK(enrolled.EK.PublicKey)
	must(t, err)

	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	must(t, err)
	signer, err := note.NewSigner(skey)
	must(t, err)
	seed := seedOf(t, skey)
	blob, err := tpm.Seal(own.Key, own.PCRs, own.Version, seed)
	must(t, err)
	stateKey, err := hkdf.Key(sha256.New, seed, nil, stateKeyLabel, ledger.StateKeySize)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, appliance.LedgerKeyBlob), blob.Marshal(), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, appliance.LedgerKeyPub), []byte(vkey+"\n"), 0o644))

	target, err := (tpm.Counter{Index: tpm.DefaultCounterIndex}).Read(conn)
	must(t, err)
	for _, name := range ledger.Files {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	fake := &forgerCounter{v: target - 2} // Create's init entry and one made-up entry reach target
	l, err := ledger.Create(dir, ledger.Config{
		Origin: origin, Device: ek.Name(), Counter: fake, Signer: signer, StateKey: stateKey,
		Bound: appliance.BoundDirs(dir),
	}, time.Now().Add(-time.Hour))
	must(t, err)
	defer l.Close()
	for fake.v < target {
		entry := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
		_, err := l.Append(entry, []byte("made up"), nil)
		must(t, err)
	}
	if err := l.Blocked(); err != nil {
		t.Fatalf("the forged ledger is not consistent under its own key: %v", err)
	}
	return &Forged{Verifier: vkey, Config: ledger.Config{
		Origin: origin, Device: ek.Name(), Signer: signer, StateKey: stateKey,
		Counter: &ledger.TPMCounter{TPM: conn, Counter: tpm.Counter{Index: tpm.DefaultCounterIndex}},
		Bound:   appliance.BoundDirs(dir),
	}}
}

// Forged is what the forger knows: its verifier key, and the ledger
// configuration its key opens the forged directory with (the real TPM
// counter, its own signer and state key).
type Forged struct {
	Verifier string
	Config   ledger.Config
}

// seedOf takes the Ed25519 seed out of a note private key,
// "PRIVATE+KEY+name+hash+base64(0x01 || seed)".
func seedOf(t testing.TB, skey string) []byte {
	t.Helper()
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if err != nil || len(raw) != 33 {
		t.Fatalf("unexpected note private key: %v", err)
	}
	return raw[1:]
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
