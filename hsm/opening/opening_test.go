package opening

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

const (
	testCourt  = "District Court of Testing"
	testOrigin = "custodian/court-a"
)

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// memLog is a signed log in memory, built with x/mod's tlog as the
// appliance's ledger builds its own: entries, their salts, stored hashes.
type memLog struct {
	hashes   []tlog.Hash
	entries  [][]byte
	salts    [][]byte
	signer   note.Signer
	verifier string
	at       time.Time // the next entry's time (zero: testNow)
}

func newLog(t testing.TB) *memLog {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &memLog{signer: s, verifier: vkey}
}

func (m *memLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = m.hashes[x]
	}
	return out, nil
}

// add appends an entry of kind committing to subject (nil: none), and
// returns its index.
func (m *memLog) add(t testing.TB, kind ledger.Kind, keyID, reason string, subject []byte) int64 {
	t.Helper()
	n := int64(len(m.entries))
	at := testNow
	if !m.at.IsZero() {
		at = m.at
	}
	e := ledger.Entry{Time: at, Kind: kind, Counter: uint64(n + 1), Outcome: ledger.OutcomeOK, KeyID: keyID}
	if kind == ledger.KindRefusal || kind == ledger.KindFailure {
		e.Outcome, e.Reason = ledger.OutcomeRefused, reason
	}
	salt := make([]byte, SaltSize)
	rand.Read(salt)
	if subject != nil {
		e.Commitment = ledger.Commit(salt, subject)
	}
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hs, err := tlog.StoredHashes(n, data, m)
	if err != nil {
		t.Fatal(err)
	}
	m.hashes = append(m.hashes, hs...)
	m.entries = append(m.entries, data)
	m.salts = append(m.salts, salt)
	return n
}

// prove is entry i with its proof against a checkpoint of the whole log.
func (m *memLog) prove(t testing.TB, i int64) *ledger.Inclusion {
	t.Helper()
	n := int64(len(m.entries))
	root, err := tlog.TreeHash(n, m)
	if err != nil {
		t.Fatal(err)
	}
	cp := log.Checkpoint{Origin: testOrigin, Size: uint64(n), Hash: root[:]}
	signed, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, m.signer)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tlog.ProveRecord(n, i, m)
	if err != nil {
		t.Fatal(err)
	}
	return &ledger.Inclusion{Index: i, Entry: string(m.entries[i]), Proof: p, Checkpoint: string(signed)}
}

// court is a court PKI with one judge.
type court struct {
	root  *trusttest.CA
	store *trust.Store
	p7s   []byte
}

func newCourt(t testing.TB, custodians ...string) *court {
	t.Helper()
	root := trusttest.NewRoot(t, "Test Court Root", testNow)
	key := trusttest.ECKeyP256(t)
	judge := root.Judge(t, "Judge Ada", key.Public(), testNow)
	store := trust.New()
	if _, err := store.AddRoot(trusttest.PEM(root.Cert), testCourt); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetCRL(root.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour)), testNow); err != nil {
		t.Fatal(err)
	}
	id, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	w := &warrant.Warrant{Version: 1, Serial: "W-7", Docket: "CR-17/2026", Court: testCourt,
		Agency: "Test Police", Official: "Inspector Morse", Offence: "fraud", Targets: []string{"alice@example.org"},
		NotBefore: testNow.Add(-time.Hour).Format(time.RFC3339), NotAfter: testNow.Add(7 * 24 * time.Hour).Format(time.RFC3339),
		KeyIDs: []string{"2026-11"}, Custodians: custodians, Recipient: id.Public().String()}
	content, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	p7s, err := warrant.Sign(content, []warrant.Signer{{Key: key, Chain: []*x509.Certificate{judge}}}, testNow.Add(-10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return &court{root: root, store: store, p7s: p7s}
}

// opened is a log with an init entry, a release of the court's warrant at
// index 1 and a refusal of another warrant at 2, and the release's opening.
func opened(t testing.TB) (*memLog, *court, *Opening) {
	t.Helper()
	m, c := newLog(t), newCourt(t, "court-a")
	m.add(t, ledger.KindInit, "", "", nil)
	i := m.add(t, ledger.KindRelease, "2026-11", "", c.p7s)
	m.add(t, ledger.KindRefusal, "", "not_addressed", []byte("another warrant"))
	return m, c, New(m.prove(t, i), m.salts[i], c.p7s, nil)
}

func TestOpeningVerifies(t *testing.T) {
	m, c, o := opened(t)
	got, err := Check(o, m.verifier, c.store)
	if err != nil {
		t.Fatal(err)
	}
	if got.Index != 1 || got.Entry.Kind != ledger.KindRelease || got.Warrant.Docket != "CR-17/2026" || got.Warrant.Court != testCourt ||
		!got.CourtVerified || got.Custodian() != "court-a" || got.TreeSize != 3 {
		t.Fatalf("opened %+v", got)
	}
	// Without the court's roots the opening still opens, and says the
	// court was not checked.
	got, err = Check(o, m.verifier, nil)
	if err != nil || got.CourtVerified {
		t.Fatalf("without roots: %+v, %v", got, err)
	}
	// It survives its own encoding.
	data, err := o.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(back, m.verifier, c.store); err != nil {
		t.Fatal(err)
	}
	if got, err := CheckFile(data, m.verifier, c.store); err != nil || got.Index != 1 {
		t.Fatalf("CheckFile: %+v %v", got, err)
	}
	if _, err := CheckFile(data[1:], m.verifier, c.store); !errors.Is(err, ErrMalformed) {
		t.Fatalf("CheckFile of a cut file: %v", err)
	}
}

// TestInvariantOpeningNeedsTheEntrysOwnSalt: any other salt, another
// entry's included, opens nothing.
func TestInvariantOpeningNeedsTheEntrysOwnSalt(t *testing.T) {
	m, c, o := opened(t)
	for name, salt := range map[string][]byte{
		"another entry's": m.salts[2],
		"one bit off":     flip(m.salts[1]),
		"zero":            make([]byte, SaltSize),
	} {
		bad := *o
		bad.Salt = EncodeSalt(salt)
		if _, err := Check(&bad, m.verifier, c.store); !errors.Is(err, ErrNotOpened) {
			t.Errorf("%s salt: %v, want ErrNotOpened", name, err)
		}
	}
}

// TestInvariantOpeningBindsItsEntry: an opening moved to another entry —
// with that entry's proof, or keeping its own — is refused, and so is one
// whose entry, proof or checkpoint was changed.
func TestInvariantOpeningBindsItsEntry(t *testing.T) {
	m, c, o := opened(t)
	// Another entry, properly proven: its commitment is not this warrant's.
	other := New(m.prove(t, 2), m.salts[1], c.p7s, nil)
	if _, err := Check(other, m.verifier, c.store); !errors.Is(err, ErrNotOpened) {
		t.Errorf("another entry with its proof: %v", err)
	}
	// The other entry's salt too: still not this warrant.
	other.Salt = EncodeSalt(m.salts[2])
	if _, err := Check(other, m.verifier, c.store); !errors.Is(err, ErrNotOpened) {
		t.Errorf("another entry with its own salt: %v", err)
	}
	// An entry without a warrant (the init entry).
	initEntry := New(m.prove(t, 0), m.salts[0], c.p7s, nil)
	if _, err := Check(initEntry, m.verifier, c.store); !errors.Is(err, ErrNoWarrantEntry) {
		t.Errorf("init entry: %v", err)
	}
	foreign := newLog(t)
	for range 3 {
		foreign.add(t, ledger.KindInit, "", "", nil)
	}
	for name, edit := range map[string]func(*Opening){
		"index moved":       func(o *Opening) { o.Index = 2 },
		"index past tree":   func(o *Opening) { o.Index = 3 },
		"entry edited":      func(o *Opening) { o.Entry = strings.Replace(o.Entry, "counter 2", "counter 9", 1) },
		"proof dropped":     func(o *Opening) { o.Proof = o.Proof[1:] },
		"foreign key":       func(o *Opening) { o.Checkpoint = foreign.prove(t, 1).Checkpoint },
		"checkpoint edit":   func(o *Opening) { o.Checkpoint = strings.Replace(o.Checkpoint, "\n3\n", "\n4\n", 1) },
		"another tree hash": func(o *Opening) { o.Proof = append([]tlog.Hash{{1}}, o.Proof[1:]...) },
	} {
		bad := *o
		bad.Proof = append([]tlog.Hash(nil), o.Proof...)
		edit(&bad)
		if _, err := Check(&bad, m.verifier, c.store); !errors.Is(err, ErrNotInLedger) {
			t.Errorf("%s: %v, want ErrNotInLedger", name, err)
		}
	}
}

// TestInvariantOpeningShowsItsCourt: the opened warrant must verify
// against the court's roots given, and must name the entry's custodian
// and key ID.
func TestInvariantOpeningShowsItsCourt(t *testing.T) {
	m, _, o := opened(t)
	stranger := newCourt(t, "court-a")
	if _, err := Check(o, m.verifier, stranger.store); !errors.Is(err, ErrCourtUnverified) {
		t.Errorf("another court's roots: %v", err)
	}
	// A log whose release commits to a warrant not addressed to it.
	m2, c2 := newLog(t), newCourt(t, "court-b")
	i := m2.add(t, ledger.KindRelease, "2026-11", "", c2.p7s)
	if _, err := Check(New(m2.prove(t, i), m2.salts[i], c2.p7s, nil), m2.verifier, nil); !errors.Is(err, ErrSubjectMismatch) {
		t.Errorf("warrant of another custodian: %v", err)
	}
	// A release of a key ID the warrant does not name.
	j := m2.add(t, ledger.KindRelease, "2027-01", "", stranger.p7s)
	if _, err := Check(New(m2.prove(t, j), m2.salts[j], stranger.p7s, nil), m2.verifier, nil); !errors.Is(err, ErrSubjectMismatch) {
		t.Errorf("key ID not in the warrant: %v", err)
	}
	// A subject that opens the commitment but is no warrant.
	k := m2.add(t, ledger.KindFailure, "", "interrupted", []byte("not a warrant"))
	if _, err := Check(New(m2.prove(t, k), m2.salts[k], []byte("not a warrant"), nil), m2.verifier, nil); !errors.Is(err, ErrNotWarrant) {
		t.Errorf("no warrant: %v", err)
	}
}

// TestScopedReleaseOpensWithItsList: a scoped release entry commits to
// the warrant and its list's digest, and opens only with both.
func TestScopedReleaseOpensWithItsList(t *testing.T) {
	m, c := newLog(t), newCourt(t, "court-a")
	list := &warrant.ListDigest{Count: 3, TreeHash: bytes.Repeat([]byte{7}, 32)}
	i := m.add(t, ledger.KindRelease, "2026-11", "", Subject(c.p7s, list))
	if _, err := Check(New(m.prove(t, i), m.salts[i], c.p7s, list), m.verifier, c.store); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(New(m.prove(t, i), m.salts[i], c.p7s, nil), m.verifier, c.store); !errors.Is(err, ErrNotOpened) || !strings.Contains(err.Error(), "envelope list") {
		t.Errorf("without the list: %v", err)
	}
	other := &warrant.ListDigest{Count: 4, TreeHash: list.TreeHash}
	if _, err := Check(New(m.prove(t, i), m.salts[i], c.p7s, other), m.verifier, c.store); !errors.Is(err, ErrNotOpened) {
		t.Errorf("another count: %v", err)
	}
}

// TestRefusalOfAWarrantForAnotherCustodianOpens: a not_addressed refusal
// is about a warrant that names other custodians; it opens, court checked.
func TestRefusalOfAWarrantForAnotherCustodianOpens(t *testing.T) {
	m, c := newLog(t), newCourt(t, "court-b")
	i := m.add(t, ledger.KindRefusal, "", "not_addressed", c.p7s)
	got, err := Check(New(m.prove(t, i), m.salts[i], c.p7s, nil), m.verifier, c.store)
	if err != nil {
		t.Fatal(err)
	}
	if got.Entry.Reason != "not_addressed" || !got.CourtVerified {
		t.Fatalf("opened %+v", got)
	}
	// A refusal entry never commits to a list: a wrong salt is not
	// blamed on a missing one.
	if _, err := Check(New(m.prove(t, i), bytes.Repeat([]byte{9}, len(m.salts[i])), c.p7s, nil), m.verifier, c.store); !errors.Is(err, ErrNotOpened) || strings.Contains(err.Error(), "envelope list") {
		t.Errorf("a refusal entry with a wrong salt: %v", err)
	}
}

// TestWindowRefusalOpensAndLateReleaseDoesNot: a refusal of an expired
// warrant opens with the court checked (the window is what refused it);
// a release entry written after the window is not vouched for.
func TestWindowRefusalOpensAndLateReleaseDoesNot(t *testing.T) {
	m, c := newLog(t), newCourt(t, "court-a")
	late := testNow.Add(8 * 24 * time.Hour)
	if _, err := c.store.SetCRL(c.root.CRL(t, late.Add(-time.Hour), late.Add(24*time.Hour)), late); err != nil {
		t.Fatal(err)
	}
	m.at = late
	i := m.add(t, ledger.KindRefusal, "", "expired", c.p7s)
	got, err := Check(New(m.prove(t, i), m.salts[i], c.p7s, nil), m.verifier, c.store)
	if err != nil || !got.CourtVerified {
		t.Fatalf("refusal of an expired warrant: %+v %v", got, err)
	}
	j := m.add(t, ledger.KindRelease, "2026-11", "", c.p7s)
	if _, err := Check(New(m.prove(t, j), m.salts[j], c.p7s, nil), m.verifier, c.store); !errors.Is(err, ErrCourtUnverified) {
		t.Fatalf("release after the window: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	m, _, o := opened(t)
	good, err := o.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(good, &doc); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(map[string]any){
		"version":       func(d map[string]any) { d["version"] = 2 },
		"unknown field": func(d map[string]any) { d["Salt"] = d["salt"] },
		"short salt":    func(d map[string]any) { d["salt"] = "abcd" },
		"upper salt":    func(d map[string]any) { d["salt"] = strings.ToUpper(d["salt"].(string)) },
		"no warrant":    func(d map[string]any) { delete(d, "warrant") },
		"negative":      func(d map[string]any) { d["index"] = -1 },
		"empty list":    func(d map[string]any) { d["envelope_list"] = map[string]any{"count": 0, "tree_hash": ""} },
	} {
		d := map[string]any{}
		for k, v := range doc {
			d[k] = v
		}
		edit(d)
		data, _ := json.Marshal(d)
		if _, err := Parse(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Parse(good); err != nil {
		t.Fatalf("the unedited opening: %v", err)
	}
	if _, err := Check(o, m.verifier, nil); err != nil {
		t.Fatal(err)
	}
}

func flip(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[0] ^= 1
	return c
}

func FuzzParse(f *testing.F) {
	m, _, o := opened(f)
	good, err := o.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"index":0,"entry":"","proof":[],"checkpoint":"","salt":"","warrant":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refusal not ErrMalformed: %v", err)
			}
			return
		}
		// Whatever parses re-encodes to what parses the same way, and
		// checking it never panics.
		again, err := o.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(again)
		if err != nil || back.Index != o.Index || back.Salt != o.Salt || !bytes.Equal(back.Warrant, o.Warrant) {
			t.Fatalf("round trip: %v", err)
		}
		Check(o, m.verifier, nil)
	})
}

func FuzzParseSaltsFile(f *testing.F) {
	sf := &SaltsFile{Version: 1, Server: "https://custodian-a.court.example:8443", WarrantDigest: strings.Repeat("ab", 32),
		Salts: []Salt{{Index: 7, Salt: strings.Repeat("01", 32)}}}
	good, err := sf.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"salts":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSaltsFile(data)
		if err != nil {
			if !errors.Is(err, ErrSaltsFile) {
				t.Fatalf("refusal not ErrSaltsFile: %v", err)
			}
			return
		}
		for _, x := range s.Salts {
			if salt, ok := s.Lookup(x.Index); !ok || len(salt) != SaltSize {
				t.Fatalf("entry %d: no salt", x.Index)
			}
		}
		again, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSaltsFile(again); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSaltsFileRefusesAnUppercaseDigest: the warrant digest is lowercase
// hex, as custodian release writes it; an edited uppercase one is refused
// where it is read, not later reported as a salts file of another warrant.
func TestSaltsFileRefusesAnUppercaseDigest(t *testing.T) {
	sf := &SaltsFile{Version: 1, WarrantDigest: strings.Repeat("AB", 32),
		Salts: []Salt{{Index: 3, Salt: strings.Repeat("cd", SaltSize)}}}
	if _, err := sf.Marshal(); err == nil {
		t.Fatal("a salts file with an uppercase digest marshals")
	}
	data := []byte(`{"version":1,"server":"","warrant_digest":"` + strings.Repeat("AB", 32) + `","salts":[{"index":3,"salt":"` + strings.Repeat("cd", SaltSize) + `"}]}`)
	_, err := ParseSaltsFile(data)
	if !errors.Is(err, ErrSaltsFile) || !strings.Contains(err.Error(), "lowercase hex") {
		t.Fatalf("uppercase digest: %v", err)
	}
	if _, err := ParseSaltsFile(bytes.ToLower(data)); err != nil {
		t.Fatalf("the same file in lowercase: %v", err)
	}
}

// TestInterruptedRefusalAfterTheWindowOpens: a restart logs a key ID
// approved and never released as a refusal with code interrupted
// (hsm/release, recoverOne), written at the restart, which may come after
// the warrant's window closed, as an interrupted release's failure entry
// may. Both are entries about a warrant the appliance accepted inside its
// window: opening either must not call the court unverified because of
// the window.
func TestInterruptedRefusalAfterTheWindowOpens(t *testing.T) {
	m, c := newLog(t), newCourt(t, "court-a")
	late := testNow.Add(8 * 24 * time.Hour)
	if _, err := c.store.SetCRL(c.root.CRL(t, late.Add(-time.Hour), late.Add(24*time.Hour)), late); err != nil {
		t.Fatal(err)
	}
	m.at = late
	failure := m.add(t, ledger.KindFailure, "2026-11", "interrupted", c.p7s)
	if got, err := Check(New(m.prove(t, failure), m.salts[failure], c.p7s, nil), m.verifier, c.store); err != nil || !got.CourtVerified {
		t.Fatalf("an interrupted failure after the window (control): %+v %v", got, err)
	}
	refusal := m.add(t, ledger.KindRefusal, "2026-11", "interrupted", c.p7s)
	if got, err := Check(New(m.prove(t, refusal), m.salts[refusal], c.p7s, nil), m.verifier, c.store); err != nil || !got.CourtVerified {
		t.Fatalf("an interrupted refusal (a key ID never released, logged at a restart after the window) does not open: %+v %v", got, err)
	}
}
