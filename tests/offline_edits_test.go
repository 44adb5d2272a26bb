package tests

// What someone holding only the SD card, between boots, can do to the
// data directory, and what the appliance makes of it at the next start.

import (
	be "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	bolt "go.etcd.io/bbolt"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

// rewriteNewestEntryTime edits, offline, the newest entry's bytes in the
// ledger's entries bucket, and nothing else.
func rewriteNewestEntryTime(t *testing.T, dir string, to time.Time) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, ledger.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		size := be.BigEndian.Uint64(tx.Bucket([]byte("meta")).Get([]byte("size")))
		key := be.BigEndian.AppendUint64(nil, size-1)
		b := tx.Bucket([]byte("entries"))
		e, err := ledger.ParseEntry(b.Get(key))
		if err != nil {
			return err
		}
		e.Time = to
		data, err := e.Marshal()
		if err != nil {
			return err
		}
		return b.Put(key, data)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// plantRecord writes, offline, a request record no request ever made.
func plantRecord(t *testing.T, dir, id string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, release.Dir, id)
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "request.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Where the daemon keeps a request's record and packages: notes in the
// ledger's database (hsm/release, record).
const (
	requestNote = "request/"
	packageNote = "package/"
	asideNote   = "unmatched/"
	// recordsBoundNote, bound, says the version that binds records ran.
	recordsBoundNote = "records/bound"
)

// editNote edits, offline, the note under key in the ledger's database:
// edit returns its new value from the old one (nil when there is none).
func editNote(t *testing.T, dir, key string, edit func(old []byte) []byte) {
	t.Helper()
	requireCurrentIndex(t, dir)
	db, err := bolt.Open(filepath.Join(dir, ledger.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("notes"))
		if err != nil {
			return err
		}
		if v := edit(b.Get([]byte(key))); v != nil {
			return b.Put([]byte(key), v)
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// asLeftByTheOlderVersion writes request id's record note again unbound,
// and the note that says this version ran unbound too, as the approved
// image does (the ledger's state is bound anew): the state a version that
// bound no record left, updated before its next start.
func asLeftByTheOlderVersion(t *testing.T, d *device, id string) {
	t.Helper()
	onDevice(t, d, func(a *appliance.Appliance, _ transport.TPM) {
		rec, err := a.Ledger.GetNote([]byte(requestNote+id), 1<<20)
		if err == nil {
			err = a.Ledger.PutNotes(ledger.Note{Key: []byte(requestNote + id), Value: rec},
				ledger.Note{Key: []byte(recordsBoundNote), Value: []byte("unbound")})
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}

// requireCurrentIndex fails the test unless ledger.db is the journal's
// index as last closed: an edit of a ledger.db that is not would be
// undone by the rebuild at the next open (settleLedger first).
func requireCurrentIndex(t *testing.T, dir string) {
	t.Helper()
	if _, err := ledger.SeenIn(dir, []byte("none")); errors.Is(err, ledger.ErrIndexUnclean) {
		t.Fatal("ledger.db is not current (the daemon was killed): settle the ledger before editing it")
	}
}

// settleLedger opens d's ledger and closes it, as the device's next start
// would, without running the daemon (nothing is recovered): ledger.db is
// then the journal's current index.
func settleLedger(t *testing.T, d *device) {
	t.Helper()
	onDevice(t, d, func(*appliance.Appliance, transport.TPM) {})
}

// readNote reads, offline, the note under key (nil: none).
func readNote(t *testing.T, dir, key string) []byte {
	t.Helper()
	var out []byte
	editNote(t, dir, key, func(old []byte) []byte {
		out = append([]byte(nil), old...)
		return old
	})
	return out
}

// storedPackages lists the release packages stored on an open
// appliance: the ledger's package notes, and the files of legacy request
// directories.
func storedPackages(t testing.TB, a *appliance.Appliance) []string {
	t.Helper()
	keys, err := a.Ledger.NoteKeys([]byte(packageNote))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		out = append(out, string(k))
	}
	files, _ := filepath.Glob(filepath.Join(a.Dir, release.Dir, "*", "*.release.json"))
	return append(out, files...)
}

// requestLeft lists what request id left on an open appliance: its
// record and packages in the ledger's notes, and a legacy directory's
// files.
func requestLeft(t testing.TB, a *appliance.Appliance, id string) []string {
	t.Helper()
	var out []string
	for _, prefix := range []string{requestNote + id, packageNote + id + "/"} {
		keys, err := a.Ledger.NoteKeys([]byte(prefix))
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			out = append(out, string(k))
		}
	}
	files, _ := filepath.Glob(filepath.Join(a.Dir, release.Dir, id, "*"))
	return append(out, files...)
}

// booted closes what the last bootDaemon opened.
var booted func()

func plantedRecord(keyIDs []string, firstEntry *int64) []byte {
	rec := map[string]any{"id": "", "warrant": []byte("attacker-chosen subject"), "warrant_digest": "00",
		"key_ids": keyIDs, "approved": time.Now().UTC(), "done": false}
	if firstEntry != nil {
		rec["first_entry"] = *firstEntry
	}
	data, _ := json.Marshal(rec)
	return data
}

// bootDaemon opens the appliance and starts (and stops) the daemon, as
// serve does at boot; it returns the appliance, open until the test ends
// or the next boot, and the TPM counter after.
func bootDaemon(t *testing.T, d *device) (*appliance.Appliance, uint64) {
	t.Helper()
	if booted != nil {
		booted()
	}
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	st := release.Serialize(conn)
	a, err := appliance.Open(d.data, st)
	if err != nil {
		t.Fatal(err)
	}
	booted = func() { a.Close(); conn.Close(); booted = nil }
	t.Cleanup(func() {
		if booted != nil {
			booted()
		}
	})
	daemon, err := release.New(release.Config{Appliance: a, TPM: st})
	if err != nil {
		t.Fatalf("the daemon did not start: %v", err)
	}
	daemon.Close()
	v, err := tpm.Counter{Index: tpm.DefaultCounterIndex}.Read(conn)
	if err != nil {
		t.Fatal(err)
	}
	return a, v
}

// TestInvariantStartupStateIsBoundToTPMEditedEntryTimeIsNotTheClockFloor:
// the newest entry's time rewritten to 2070 in the entries bucket alone
// blocks the appliance (state_mismatch) instead of becoming the clock
// floor that would refuse every warrant as clock_behind for good.
func TestInvariantStartupStateIsBoundToTPMEditedEntryTimeIsNotTheClockFloor(t *testing.T) {
	now := time.Now().UTC()
	d, _ := readyDevice(t, now, "2026-11")
	rewriteNewestEntryTime(t, d.data, time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC))
	a, _ := bootDaemon(t, d)
	if err := a.Ledger.Blocked(); !errors.Is(err, ledger.ErrStateMismatch) {
		t.Fatalf("Blocked() = %v, want ErrStateMismatch", err)
	}
	if err := a.Ledger.CheckClock(time.Now()); err != nil {
		t.Fatalf("the edited time became the clock floor: %v", err)
	}
}

// TestInvariantNothingOutsideWritesTPMNVPlantedRequestRecordsAreIgnored:
// unfinished request records planted offline — one listing 25 key IDs,
// one naming the init entry as its release, one with a key ID that is
// not one, one that is not JSON — make no entry and no NV write at the
// next start, do not stop the daemon, and are moved aside.
func TestInvariantNothingOutsideWritesTPMNVPlantedRequestRecordsAreIgnored(t *testing.T) {
	now := time.Now().UTC()
	d, _ := readyDevice(t, now, "2026-11")
	_, before := bootDaemon(t, d)

	var many []string
	for i := range 25 {
		many = append(many, fmt.Sprintf("k%d", i))
	}
	initEntry := int64(0)
	planted := map[string][]byte{
		"00112233445566778899aabbccddeeff": plantedRecord(many, nil),
		"10112233445566778899aabbccddeeff": plantedRecord([]string{"2026-11"}, &initEntry),
		"20112233445566778899aabbccddeeff": plantedRecord([]string{"not a key id/.."}, nil),
		"30112233445566778899aabbccddeeff": []byte("{not json"),
	}
	for id, data := range planted {
		var rec map[string]any
		if json.Unmarshal(data, &rec) == nil {
			rec["id"] = id
			data, _ = json.Marshal(rec)
		}
		plantRecord(t, d.data, id, data)
	}
	a, after := bootDaemon(t, d)
	if after != before || a.Ledger.Blocked() != nil {
		t.Fatalf("planted records: TPM counter %d -> %d, blocked %v", before, after, a.Ledger.Blocked())
	}
	for id := range planted {
		if _, err := os.Stat(filepath.Join(d.data, release.Dir, id+".unmatched", "request.json")); err != nil {
			t.Errorf("record %s was not moved aside: %v", id, err)
		}
	}
	if _, again := bootDaemon(t, d); again != before {
		t.Fatalf("a second start wrote NV: %d -> %d", before, again)
	}
}

// TestInvariantNothingOutsideWritesTPMNVPlantedRequestNotesAreIgnored:
// the same planted records as notes in the ledger's database, where the
// daemon keeps its records — and one under a key that is no request ID —
// make no entry and no NV write at the next start, do not stop the
// daemon, and are set aside under unmatched/.
func TestInvariantNothingOutsideWritesTPMNVPlantedRequestNotesAreIgnored(t *testing.T) {
	now := time.Now().UTC()
	d, _ := readyDevice(t, now, "2026-11")
	a, before := bootDaemon(t, d)
	size := a.Ledger.Size()
	booted()

	var many []string
	for i := range 25 {
		many = append(many, fmt.Sprintf("k%d", i))
	}
	initEntry := int64(0)
	planted := map[string][]byte{
		"00112233445566778899aabbccddeeff":  plantedRecord(many, nil),
		"10112233445566778899aabbccddeeff":  plantedRecord([]string{"2026-11"}, &initEntry),
		"20112233445566778899aabbccddeeff":  plantedRecord([]string{"not a key id/.."}, nil),
		"30112233445566778899aabbccddeeff":  []byte("{not json"),
		"../40112233445566778899aabbccddee": plantedRecord([]string{"2026-11"}, &initEntry),
	}
	for id, data := range planted {
		var rec map[string]any
		if json.Unmarshal(data, &rec) == nil {
			rec["id"] = id
			data, _ = json.Marshal(rec)
		}
		editNote(t, d.data, requestNote+id, func([]byte) []byte { return data })
	}
	a, after := bootDaemon(t, d)
	if after != before || a.Ledger.Blocked() != nil || a.Ledger.Size() != size {
		t.Fatalf("planted notes: TPM counter %d -> %d, ledger size %d -> %d, blocked %v", before, after, size, a.Ledger.Size(), a.Ledger.Blocked())
	}
	booted()
	for id := range planted {
		if readNote(t, d.data, requestNote+id) != nil || readNote(t, d.data, asideNote+id) == nil {
			t.Errorf("note %s was not set aside", id)
		}
	}
	if _, again := bootDaemon(t, d); again != before {
		t.Fatalf("a second start wrote NV: %d -> %d", before, again)
	}
}
