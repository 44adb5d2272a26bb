package ledger_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// rewriteEntry edits entry i with edit and recomputes every stored Merkle
// hash, as anyone can (they are public SHA-256), so the tree is consistent
// with the edited entries.
func rewriteEntry(t *testing.T, dir string, i int64, edit func(tx *bolt.Tx, e *ledger.Entry) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, ledger.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		entries := tx.Bucket([]byte("entries"))
		e, err := ledger.ParseEntry(entries.Get(key(uint64(i))))
		if err != nil {
			return err
		}
		if err := edit(tx, e); err != nil {
			return err
		}
		data, err := e.Marshal()
		if err != nil {
			return err
		}
		if err := entries.Put(key(uint64(i)), data); err != nil {
			return err
		}
		var hashes hashList
		n := int64(0)
		c := entries.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			hs, err := tlog.StoredHashes(n, v, hashes)
			if err != nil {
				return err
			}
			hashes = append(hashes, hs...)
			n++
		}
		stored := tx.Bucket([]byte("hashes"))
		for j, h := range hashes {
			if err := stored.Put(key(uint64(j)), h[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

type hashList []tlog.Hash

func (h hashList) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = h[x]
	}
	return out, nil
}

// TestInvariantResolveAcceptsOnlyRecordsTheDeviceWrote: a release entry in
// the middle of the ledger rewritten offline as a refusal (same counter
// and time), its replay key removed and every Merkle hash recomputed, is a
// consistent tree that still counts to the TPM's counter; it blocks as
// edited records (ErrRecordsEdited), and resolve-rollback refuses it, with
// the release and its replay key lost to no one: the ledger stays blocked
// and nothing is appended.
func TestInvariantResolveAcceptsOnlyRecordsTheDeviceWrote(t *testing.T) {
	d, dir, _ := boundDevice(t)
	l := create(t, d, dir)
	appendN(t, l, 2)
	release := ledger.Entry{Time: t0.Add(10 * time.Second), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: "2026-11"}
	ri, err := l.Append(release, []byte("warrant"), []byte("court-a/W-1"))
	if err != nil {
		t.Fatal(err)
	}
	after := ledger.Entry{Time: t0.Add(11 * time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "no-press"}
	if _, err := l.Append(after, []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	size := l.Size()
	l.Close()

	rewriteEntry(t, dir, ri, func(tx *bolt.Tx, e *ledger.Entry) error {
		e.Kind, e.Outcome, e.Reason = ledger.KindRefusal, ledger.OutcomeRefused, "no-press"
		return tx.Bucket([]byte("replay")).Delete([]byte("court-a/W-1"))
	})
	l = open(t, d, dir)
	if err := l.Blocked(); !errors.Is(err, ledger.ErrRecordsEdited) || !strings.Contains(err.Error(), "replay index") {
		t.Fatalf("Blocked() = %v, want ErrRecordsEdited naming the replay index", err)
	}
	_, err = l.ResolveRollback(t0.Add(time.Hour))
	if !errors.Is(err, ledger.ErrRecordsEdited) || !strings.Contains(err.Error(), "resolve cannot accept them") {
		t.Fatalf("resolve accepted an edited ledger: %v", err)
	}
	if l.Blocked() == nil || l.Size() != size {
		t.Fatalf("a refused resolve changed the ledger: blocked %v, size %d (was %d)", l.Blocked(), l.Size(), size)
	}
	l.Close()
	if err := open(t, d, dir).Blocked(); !errors.Is(err, ledger.ErrRecordsEdited) {
		t.Fatalf("reopened after a refused resolve: %v", err)
	}
}

// TestInvariantBlockedStateNamesEveryPartThatDiffers: an edited entry and
// a file dropped into the bound trust/ at once are both reported, so the
// operator is never shown the ledger's edit alone while trust/ changed
// too; resolve refuses both, and trust/ is never bound.
func TestInvariantBlockedStateNamesEveryPartThatDiffers(t *testing.T) {
	d, dir, trustDir := boundDevice(t)
	if err := os.MkdirAll(trustDir, 0o700); err != nil {
		t.Fatal(err)
	}
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close()

	if err := os.WriteFile(filepath.Join(trustDir, "root.pem"), []byte("another root"), 0o600); err != nil {
		t.Fatal(err)
	}
	rewriteEntry(t, dir, 1, func(_ *bolt.Tx, e *ledger.Entry) error {
		e.Reason = "bad-signature"
		return nil
	})
	l = open(t, d, dir)
	err := l.Blocked()
	if !errors.Is(err, ledger.ErrRecordsEdited) || !strings.Contains(err.Error(), "recorded tree") || !strings.Contains(err.Error(), "trust/") {
		t.Fatalf("Blocked() = %v, want ErrRecordsEdited naming the tree and trust/", err)
	}
	if _, err := l.ResolveRollback(t0.Add(time.Hour)); !errors.Is(err, ledger.ErrRecordsEdited) {
		t.Fatalf("resolve accepted an edited ledger and trust/: %v", err)
	}
	l.Close()
	if err := open(t, d, dir).Blocked(); err == nil {
		t.Fatal("trust/ with the dropped root is bound")
	}
}
