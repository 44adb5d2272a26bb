package ledger_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// editBucket changes one bucket of the ledger's database offline, as
// anyone holding the SD card can.
func editBucket(t *testing.T, dir, bucket string, edit func(*bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, ledger.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return edit(tx.Bucket([]byte(bucket))) }); err != nil {
		t.Fatal(err)
	}
}

func key(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// retime rewrites entry i's time in the entries bucket only.
func retime(i uint64, to time.Time) func(*bolt.Bucket) error {
	return func(b *bolt.Bucket) error {
		e, err := ledger.ParseEntry(b.Get(key(i)))
		if err != nil {
			return err
		}
		e.Time = to
		data, err := e.Marshal()
		if err != nil {
			return err
		}
		return b.Put(key(i), data)
	}
}

func flipByte(i uint64) func(*bolt.Bucket) error {
	return func(b *bolt.Bucket) error {
		v := bytes.Clone(b.Get(key(i)))
		v[0] ^= 1
		return b.Put(key(i), v)
	}
}

// TestInvariantStartupStateIsBoundToTPMEntriesSaltsAndHashesAreChecked:
// an offline edit, of ledger.db or of the journal (which Open then
// rebuilds ledger.db from), of any record the state stands for — an entry's bytes
// (the newest one's time set to 2070, which would become the clock's
// floor), a salt (which opens a commitment for a court), a Merkle hash
// that no tree hash reads, an extra record — blocks at Open with
// ErrStateMismatch, and resolve-rollback does not accept edited records
// (ErrRecordsEdited): only a copy the device wrote can be put back.
func TestInvariantStartupStateIsBoundToTPMEntriesSaltsAndHashesAreChecked(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 6) // entries 0..6: stored hashes 0..12
	l.Close()
	pristine := filepath.Join(t.TempDir(), "pristine")
	copyTree(t, dir, pristine)

	edits := []struct {
		name, bucket string
		edit         func(*bolt.Bucket) error
	}{
		{"newest entry's time", "entries", retime(6, time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC))},
		{"an older entry", "entries", retime(2, t0.Add(2*time.Second+time.Hour))},
		{"an entry removed", "entries", func(b *bolt.Bucket) error { return b.Delete(key(3)) }},
		{"an entry added", "entries", func(b *bolt.Bucket) error { return b.Put(key(7), []byte("x")) }},
		// Stored hash 0 is entry 0's leaf: TreeHash(7) reads only the
		// hashes of the complete subtrees (4, 2, 1 leaves), never it.
		{"a hash no tree hash reads", "hashes", flipByte(0)},
		{"a hash added", "hashes", func(b *bolt.Bucket) error { return b.Put(key(99), make([]byte, 32)) }},
		{"a salt removed", "salts", func(b *bolt.Bucket) error { return b.Delete(key(6)) }},
		{"a salt", "salts", flipByte(4)},
	}
	t.Run("untouched", func(t *testing.T) {
		copyTree(t, pristine, dir)
		if err := open(t, d, dir).Blocked(); err != nil {
			t.Fatalf("the untouched copy is blocked: %v", err)
		}
	})
	for _, c := range edits {
		for _, where := range []string{ledger.FileName, ledger.JournalName} {
			t.Run(c.name+" in "+where, func(t *testing.T) {
				copyTree(t, pristine, dir)
				editBucket(t, dir, c.bucket, c.edit)
				if where == ledger.JournalName {
					if err := ledger.JournalFromIndex(dir); err != nil {
						t.Fatal(err)
					}
				}
				checkEditRefused(t, d, dir, c.name)
			})
		}
	}
}

// checkEditRefused opens a ledger edited offline: it is blocked, and
// resolve does not accept the edit.
func checkEditRefused(t *testing.T, d *device, dir, name string) {
	t.Helper()
	l := open(t, d, dir)
	if err := l.Blocked(); !errors.Is(err, ledger.ErrStateMismatch) {
		t.Fatalf("Blocked() = %v, want ErrStateMismatch", err)
	}
	if err := l.CheckClock(t0.Add(time.Hour)); name == "newest entry's time" && err != nil {
		t.Fatalf("the edited time reached the clock check: %v", err)
	}
	_, err := l.ResolveRollback(t0.Add(2 * time.Hour))
	if !errors.Is(err, ledger.ErrRecordsEdited) || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("resolve accepted edited entries: %v", err)
	}
	if l.Blocked() == nil {
		t.Fatal("a refused resolve unblocked the ledger")
	}
}

// rolledBack returns a device whose ledger (entries up to t0+3s) is one
// behind the TPM counter, as after a restored copy.
func rolledBack(t *testing.T) (*device, string) {
	t.Helper()
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close()
	if _, err := (tpm.Counter{Index: tpm.DefaultCounterIndex}).Increment(d.conn); err != nil {
		t.Fatal(err)
	}
	return d, dir
}

// TestInvariantRollbackBlocksUntilResolvedResolveIsAllOrNothing: a
// resolve refused (here by a clock behind the newest entry) changes
// nothing: the ledger stays blocked, now and after a restart, with no
// rebinding and the replay floor where it was. One that succeeds commits
// to the state it accepted in its own entry.
func TestInvariantRollbackBlocksUntilResolvedResolveIsAllOrNothing(t *testing.T) {
	d, dir := rolledBack(t)
	l := open(t, d, dir)
	if err := l.Blocked(); !errors.Is(err, ledger.ErrRolledBack) {
		t.Fatalf("Blocked() = %v, want ErrRolledBack", err)
	}
	size, floor := l.Size(), l.ReplayFloor()
	if _, err := l.ResolveRollback(t0.Add(-72 * time.Hour)); !errors.Is(err, ledger.ErrClockBehind) {
		t.Fatalf("resolve with the clock behind the newest entry: %v", err)
	}
	for restarted := range 2 {
		if restarted == 1 {
			l = reopen(t, d, dir, l)
		}
		if !errors.Is(l.Blocked(), ledger.ErrRolledBack) || l.Size() != size || !l.ReplayFloor().Equal(floor) {
			t.Fatalf("after a refused resolve (restarted: %d): blocked %v, size %d (was %d), floor %s (was %s)",
				restarted, l.Blocked(), l.Size(), size, l.ReplayFloor(), floor)
		}
	}

	at := t0.Add(time.Hour)
	i, err := l.ResolveRollback(at)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := l.Entry(i)
	e, err := ledger.ParseEntry(data)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != ledger.KindResolve || len(e.Commitment) != 32 {
		t.Fatalf("the resolve entry commits to nothing: %q", data)
	}
	if l.Blocked() != nil || !l.ReplayFloor().Equal(at) {
		t.Fatalf("after resolving: blocked %v, floor %s", l.Blocked(), l.ReplayFloor())
	}
	if err := reopen(t, d, dir, l).Blocked(); err != nil {
		t.Fatalf("a resolved ledger opens blocked: %v", err)
	}
}

// TestInvariantClockNeverRunsBackwardsPastNewestEntryEvenWhenResolving:
// the replay floor a resolve sets is never before the newest entry it
// accepted; a last time forged far in the future in the meta bucket
// (unchecked while blocked) is an edit of the records, which resolve
// refuses, so it never becomes the floor.
func TestInvariantClockNeverRunsBackwardsPastNewestEntryEvenWhenResolving(t *testing.T) {
	d, dir := rolledBack(t)
	pristine := filepath.Join(t.TempDir(), "pristine")
	copyTree(t, dir, pristine)
	editBucket(t, dir, "meta", func(b *bolt.Bucket) error {
		return b.Put([]byte("last-time"), key(uint64(time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC).Unix())))
	})
	l := open(t, d, dir)
	if !errors.Is(l.Blocked(), ledger.ErrRecordsEdited) {
		t.Fatalf("Blocked() = %v, want ErrRecordsEdited", l.Blocked())
	}
	newest := t0.Add(3 * time.Second)
	if _, err := l.ResolveRollback(newest.Add(time.Minute)); !errors.Is(err, ledger.ErrRecordsEdited) {
		t.Fatalf("resolve accepted a forged last time: %v", err)
	}
	l.Close()

	copyTree(t, pristine, dir)
	l = open(t, d, dir)
	if _, err := l.ResolveRollback(newest.Add(-time.Second)); !errors.Is(err, ledger.ErrClockBehind) {
		t.Fatalf("resolve one second before the newest entry: %v", err)
	}
	if _, err := l.ResolveRollback(newest); err != nil {
		t.Fatalf("resolve at the newest entry's time: %v", err)
	}
	if got := l.ReplayFloor(); got.Before(newest) {
		t.Fatalf("replay floor %s before the newest entry %s", got, newest)
	}
}

// TestInvariantCloneToAnotherTPMCannotBeResolved: a ledger bound to
// another device is not adopted by resolve-rollback.
func TestInvariantCloneToAnotherTPMCannotBeResolved(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	create(t, d, dir).Close()
	cfg := d.config(t)
	cfg.Device = tpmtest.RandomEK(t).Name()
	l, err := ledger.Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(l.Blocked(), ledger.ErrOtherDevice) {
		t.Fatalf("Blocked() = %v, want ErrOtherDevice", l.Blocked())
	}
	if _, err := l.ResolveRollback(t0.Add(time.Hour)); !errors.Is(err, ledger.ErrOtherDevice) {
		t.Fatalf("resolve adopted another device's ledger: %v", err)
	}
	if size := l.Size(); size != 1 {
		t.Fatalf("a refused resolve appended: size %d", size)
	}

	l.Close()

	// The appliance found the enrolled EK is not this TPM's.
	cfg = d.config(t)
	cfg.DeviceErr = errors.New("the enrolled EK is not this TPM's")
	if l, err = ledger.Open(dir, cfg); err != nil {
		t.Fatal(err)
	}
	if err := l.Blocked(); !errors.Is(err, ledger.ErrBlocked) || !strings.Contains(err.Error(), "not this TPM's") {
		t.Fatalf("Blocked() = %v, want the device error", err)
	}
	if _, err := l.ResolveRollback(t0.Add(time.Hour)); err == nil || l.Blocked() == nil {
		t.Fatalf("resolve accepted a data directory enrolled for another TPM: %v", err)
	}
}

// reopen closes l (if not nil) and opens the ledger again.
func reopen(t *testing.T, d *device, dir string, l *ledger.Ledger) *ledger.Ledger {
	t.Helper()
	if l != nil {
		l.Close()
	}
	return open(t, d, dir)
}
