package ledger_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// checkpointFields opens a signed checkpoint with x/mod's note package and
// splits the C2SP body by hand, without any of our code.
func checkpointFields(t *testing.T, signed []byte, vkey string) (string, int64, []byte) {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatalf("note.Open: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		t.Fatalf("checkpoint body %q is not origin, size, hash", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		t.Fatalf("root hash %q", lines[2])
	}
	return lines[0], size, root
}

func toBytes[H ~[32]byte](hs []H) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

// TestCheckpointAndProofsVerifyIndependently checks our checkpoints with
// x/mod's note and our proofs with transparency-dev/merkle, an independent
// RFC 6962 implementation.
func TestCheckpointAndProofsVerifyIndependently(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		l := create(t, d, t.TempDir())
		appendN(t, l, 4)
		old, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, l, 6)
		signed, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		gotOrigin, size, root := checkpointFields(t, signed, d.key.Verifier)
		_, oldSize, oldRoot := checkpointFields(t, old, d.key.Verifier)
		if gotOrigin != origin || size != 11 || oldSize != 5 {
			t.Fatalf("origin %q size %d, old size %d", gotOrigin, size, oldSize)
		}
		for i := int64(0); i < size; i++ {
			entry, err := l.Entry(i)
			if err != nil {
				t.Fatal(err)
			}
			p, err := l.InclusionProof(i, size)
			if err != nil {
				t.Fatal(err)
			}
			leaf := rfc6962.DefaultHasher.HashLeaf(entry)
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(size), leaf, toBytes(p), root); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
		cp, err := l.ConsistencyProof(oldSize, size)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(oldSize), uint64(size), toBytes(cp), oldRoot, root); err != nil {
			t.Fatal(err)
		}
		if err := l.Verify(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOurVerifiersCatchForgeries(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		l := create(t, d, t.TempDir())
		appendN(t, l, 3)
		oldSigned, _ := l.Checkpoint()
		appendN(t, l, 3)
		signed, _ := l.Checkpoint()
		cp, err := ledger.VerifyCheckpoint(signed, d.key.Verifier)
		if err != nil {
			t.Fatal(err)
		}
		old, err := ledger.VerifyCheckpoint(oldSigned, d.key.Verifier)
		if err != nil {
			t.Fatal(err)
		}
		entry, _ := l.Entry(2)
		p, _ := l.InclusionProof(2, int64(cp.Size))
		if err := ledger.VerifyInclusion(cp, 2, entry, p); err != nil {
			t.Fatal(err)
		}
		forged := bytes.Replace(entry, []byte("no-press"), []byte("no-pres5"), 1)
		if err := ledger.VerifyInclusion(cp, 2, forged, p); err == nil {
			t.Fatal("a forged entry verified")
		}
		if err := ledger.CheckExtends(old, cp, l.ConsistencyProof); err != nil {
			t.Fatal(err)
		}
		// A checkpoint of another history is not extended, whether older,
		// of the same size, or newer.
		other := *old
		other.Hash = bytes.Clone(cp.Hash)
		if err := ledger.CheckExtends(&other, cp, l.ConsistencyProof); !errors.Is(err, ledger.ErrTwoHistories) {
			t.Fatalf("an older checkpoint of another history: %v", err)
		}
		same := *cp
		same.Hash = bytes.Clone(old.Hash)
		if err := ledger.CheckExtends(cp, &same, l.ConsistencyProof); !errors.Is(err, ledger.ErrTwoHistories) {
			t.Fatalf("another root for the same size: %v", err)
		}
		if err := ledger.CheckExtends(cp, old, l.ConsistencyProof); !errors.Is(err, ledger.ErrTwoHistories) {
			t.Fatalf("a smaller tree: %v", err)
		}
		if err := ledger.CheckExtends(cp, cp, l.ConsistencyProof); err != nil {
			t.Fatalf("the same tree: %v", err)
		}
		tampered := bytes.Replace(signed, []byte("\n7\n"), []byte("\n8\n"), 1)
		if _, err := ledger.VerifyCheckpoint(tampered, d.key.Verifier); !errors.Is(err, ledger.ErrBadCheckpoint) {
			t.Fatalf("altered checkpoint: %v", err)
		}
	})
}

// TestInvariantRollbackOfDataDirBlocksUntilResolved copies the data directory,
// appends, and restores the copy: the ledger is behind the TPM counter.
func TestInvariantRollbackOfDataDirBlocksUntilResolved(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		dir, backup := t.TempDir(), t.TempDir()
		l := create(t, d, dir)
		appendN(t, l, 2)
		l.Close()
		copyDir(t, dir, backup)
		l = open(t, d, dir)
		appendN(t, l, 2)
		l.Close()

		l = open(t, d, backup)
		if err := l.Blocked(); !errors.Is(err, ledger.ErrRolledBack) {
			t.Fatalf("restored copy: Blocked() = %v, want ErrRolledBack", err)
		}
		e := ledger.Entry{Time: t0.Add(time.Hour), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
		if _, err := l.Append(e, nil, nil); !errors.Is(err, ledger.ErrRolledBack) {
			t.Fatalf("append on a rolled-back ledger: %v", err)
		}
		resolvedAt := t0.Add(2 * time.Hour)
		i, err := l.ResolveRollback(resolvedAt)
		if err != nil {
			t.Fatal(err)
		}
		if l.Blocked() != nil || !l.ReplayFloor().Equal(resolvedAt) {
			t.Fatalf("after resolving: blocked %v, floor %v", l.Blocked(), l.ReplayFloor())
		}
		resolve, _ := l.Entry(i)
		if !bytes.Contains(resolve, []byte("kind resolve")) {
			t.Fatalf("the resolution was not logged: %q", resolve)
		}
		if _, err := l.Append(ledger.Entry{Time: resolvedAt, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}, nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := l.Verify(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestCloneToAnotherTPMIsBlocked moves a data directory to a second swtpm.
func TestInvariantCloneToAnotherTPMIsBlocked(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, first tpmtest.Target) {
		dir := t.TempDir()
		a := newDevice(t, first.Open(t))
		l := create(t, a, dir)
		appendN(t, l, 3)
		l.Close()

		tpmtest.RunSwtpm(t, func(t *testing.T, second tpmtest.Target) {
			b := newDevice(t, second.Open(t))
			cfg := b.config(t)
			cfg.Device = a.ek.Name() // even claiming to be the first device
			l, err := ledger.Open(dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := l.Blocked(); !errors.Is(err, ledger.ErrBlocked) {
				t.Fatalf("clone on a second TPM: Blocked() = %v", err)
			}
			l.Close()
			l, err = ledger.Open(dir, b.config(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Blocked(); !errors.Is(err, ledger.ErrOtherDevice) {
				t.Fatalf("clone under its own identity: Blocked() = %v", err)
			}
		})
	})
}

func TestInvariantReplayKeyIsAcceptedOnce(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		dir := t.TempDir()
		l := create(t, d, dir)
		key := []byte("issuer+serial")
		e := ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
		i, err := l.Append(e, []byte("warrant"), key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(e, []byte("warrant"), key); !errors.Is(err, ledger.ErrReplay) {
			t.Fatalf("second use: %v", err)
		}
		l.Close()
		l = open(t, d, dir)
		if got, seen, err := l.Seen(key); err != nil || !seen || got != i {
			t.Fatalf("after reopen: seen %v at %d (%v), want %d", seen, got, err, i)
		}
		size := l.Size()
		if _, err := l.Append(e, []byte("warrant"), key); !errors.Is(err, ledger.ErrReplay) {
			t.Fatalf("after reopen: %v", err)
		}
		if l.Size() != size {
			t.Fatal("a refused replay changed the ledger")
		}
	})
}

func TestCommitmentOpensWithKeptSalt(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		l := create(t, newDevice(t, target.Open(t)), t.TempDir())
		i, err := l.Append(ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}, []byte("the warrant"), nil)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := l.Entry(i)
		e, err := ledger.ParseEntry(data)
		if err != nil {
			t.Fatal(err)
		}
		salt, err := l.Salt(i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.Commitment, ledger.Commit(salt, []byte("the warrant"))) {
			t.Fatal("the kept salt does not open the commitment")
		}
		if bytes.Contains(data, []byte("the warrant")) {
			t.Fatal("the entry holds the warrant itself")
		}
	})
}

func TestInvariantClockBehindNewestEntryIsRefused(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		l := create(t, newDevice(t, target.Open(t)), t.TempDir())
		late := t0.Add(time.Hour)
		if _, err := l.Append(ledger.Entry{Time: late, Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}, nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := l.CheckClock(late.Add(-time.Minute)); !errors.Is(err, ledger.ErrClockBehind) {
			t.Fatalf("CheckClock: %v", err)
		}
		early := ledger.Entry{Time: late.Add(-time.Minute), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
		if _, err := l.Append(early, nil, nil); !errors.Is(err, ledger.ErrClockBehind) {
			t.Fatalf("Append before the newest entry: %v", err)
		}
	})
}

func TestCreateRefusesExistingAndOpenRefusesMissing(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		dir := t.TempDir()
		if _, err := ledger.Open(dir, d.config(t)); !errors.Is(err, ledger.ErrNoLedger) {
			t.Fatalf("Open of nothing: %v", err)
		}
		create(t, d, dir).Close()
		if _, err := ledger.Create(dir, d.config(t), t0); !errors.Is(err, ledger.ErrLedgerExists) {
			t.Fatalf("Create over a ledger: %v", err)
		}
	})
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// failOnce wraps the real TPM counter and fails its next increment, as a
// power cut between the entry's commit and the counter's increment would.
type failOnce struct {
	ledger.Counter
	armed bool
}

func (f *failOnce) Increment() (uint64, error) {
	if f.armed {
		f.armed = false
		return 0, errors.New("the TPM stopped answering")
	}
	return f.Counter.Increment()
}

func (f *failOnce) IncrementChecked() (uint64, error) {
	if f.armed {
		return f.Increment()
	}
	return f.Counter.IncrementChecked()
}

// createFailing creates a ledger in dir whose counter fails its next
// increment once armed.
func createFailing(t *testing.T, d *device, dir string) (*ledger.Ledger, *failOnce) {
	t.Helper()
	cfg := d.config(t)
	faulty := &failOnce{Counter: cfg.Counter}
	cfg.Counter = faulty
	l, err := ledger.Create(dir, cfg, t0)
	if err != nil {
		t.Fatal(err)
	}
	return l, faulty
}

func TestInterruptedIncrementIsFinishedAtOpen(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		dir := t.TempDir()
		l, faulty := createFailing(t, d, dir)
		faulty.armed = true
		_, err := l.Append(ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}, nil, nil)
		if !errors.Is(err, ledger.ErrBlocked) {
			t.Fatalf("append with a failed increment: %v", err)
		}
		size := l.Size()
		l.Close()

		l = open(t, d, dir)
		if err := l.Blocked(); err != nil {
			t.Fatalf("reopen did not finish the increment: %v", err)
		}
		if l.Size() != size || l.Verify() != nil {
			t.Fatalf("size %d, want %d; verify %v", l.Size(), size, l.Verify())
		}
		appendN(t, l, 1)
	})
}

func FuzzParseEntry(f *testing.F) {
	e := ledger.Entry{Time: t0, Kind: ledger.KindRelease, Counter: 7, Commitment: make([]byte, 32),
		Outcome: ledger.OutcomeOK, KeyID: "2026-11"}
	good, _ := e.Marshal()
	f.Add(good)
	u := unverifiedEntry()
	tally, _ := u.Marshal()
	f.Add(tally)
	f.Add([]byte("custodian ledger entry v1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ledger.ParseEntry(data)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("parsed entry re-encodes differently: %v", err)
		}
	})
}

func FuzzVerifyCheckpoint(f *testing.F) {
	skey, vkey, _ := note.GenerateKey(nil, origin)
	signer, _ := note.NewSigner(skey)
	good, _ := note.Sign(&note.Note{Text: origin + "\n3\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n"}, signer)
	f.Add(good)
	f.Add([]byte(origin + "\n3\nAAAA\n\n— " + origin + " AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := ledger.VerifyCheckpoint(data, vkey)
		if err == nil && (cp.Origin != origin || len(cp.Hash) != 32) {
			t.Fatalf("accepted %+v", cp)
		}
	})
}
