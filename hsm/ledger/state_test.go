package ledger_test

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// fakeCounter is a forger's counter: it says whatever the forger needs.
type fakeCounter struct{ v uint64 }

func (c *fakeCounter) Read() (uint64, error)             { return c.v, nil }
func (c *fakeCounter) Create() (uint64, error)           { return c.v, nil }
func (c *fakeCounter) Increment() (uint64, error)        { c.v++; return c.v, nil }
func (c *fakeCounter) IncrementChecked() (uint64, error) { return c.Increment() }

// boundDevice is a device whose ledger binds one directory, "trust".
func boundDevice(t *testing.T) (*device, string, string) {
	t.Helper()
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	trustDir := filepath.Join(dir, "trust")
	d.bound = []ledger.BoundDir{{Name: "trust", Path: trustDir}}
	return d, dir, trustDir
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(from, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, info.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}

func tpmCounter(t *testing.T, d *device) uint64 {
	t.Helper()
	v, err := tpm.Counter{Index: tpm.DefaultCounterIndex}.Read(d.conn)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestInvariantStartupStateIsBoundToTPMPaddedCopyIsBlocked: the ledger of
// a copy of the data directory taken before a release, made again offline
// with the package's own API under a key of the forger's and a fake
// counter, and padded until its counter equals the TPM's, opens blocked
// with ErrStateMismatch. Its entries verify (the forger used the real
// code), so only the binding catches it.
func TestInvariantStartupStateIsBoundToTPMPaddedCopyIsBlocked(t *testing.T) {
	d, dir, _ := boundDevice(t)
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close()
	snapshot := filepath.Join(t.TempDir(), "copy")
	copyTree(t, dir, snapshot)

	l = open(t, d, dir)
	release := ledger.Entry{Time: t0.Add(time.Hour), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: "2026-11"}
	if _, err := l.Append(release, []byte("warrant"), []byte("court-a/W-1")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	target := tpmCounter(t, d)

	// The forger: any state key (not the device's), a counter that obeys.
	copyTree(t, snapshot, dir)
	for _, name := range ledger.Files {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	forged := d.config(t)
	forged.StateKey = make([]byte, ledger.StateKeySize)
	rand.Read(forged.StateKey)
	fake := &fakeCounter{}
	forged.Counter = fake
	f, err := ledger.Create(dir, forged, t0)
	if err != nil {
		t.Fatal(err)
	}
	for fake.v < target {
		e := ledger.Entry{Time: t0.Add(3 * time.Hour), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "no-press"}
		if _, err := f.Append(e, []byte("made up"), nil); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()

	l = open(t, d, dir)
	if err := l.Verify(); err != nil {
		t.Fatalf("the padded copy does not even verify structurally, so this test shows nothing: %v", err)
	}
	if err := l.Blocked(); !errors.Is(err, ledger.ErrStateMismatch) {
		t.Fatalf("padded copy with counter %d (TPM %d): Blocked() = %v, want ErrStateMismatch", fake.v, target, err)
	}
	if _, seen, _ := l.Seen([]byte("court-a/W-1")); seen {
		t.Fatal("the copy still knows the lost replay key; the test restored the wrong state")
	}
	if _, err := l.Append(release, nil, []byte("court-a/W-1")); !errors.Is(err, ledger.ErrStateMismatch) {
		t.Fatalf("the lost warrant was accepted again: %v", err)
	}
}

// TestInvariantStartupStateIsBoundToTPMReplayIndexIsBound: deleting a key
// from the replay index, or adding one, leaves size and root as they were
// and still blocks.
func TestInvariantStartupStateIsBoundToTPMReplayIndexIsBound(t *testing.T) {
	d, dir, _ := boundDevice(t)
	l := create(t, d, dir)
	for i, key := range []string{"court-a/W-1", "court-a/W-2"} {
		e := ledger.Entry{Time: t0.Add(time.Duration(i+1) * time.Minute), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
		if _, err := l.Append(e, nil, []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	snapshot := filepath.Join(t.TempDir(), "copy")
	copyTree(t, dir, snapshot)

	for name, edit := range map[string]func(b *bolt.Bucket) error{
		"key deleted": func(b *bolt.Bucket) error { return b.Delete([]byte("court-a/W-1")) },
		"key added":   func(b *bolt.Bucket) error { return b.Put([]byte("court-a/W-9"), make([]byte, 8)) },
		"index moved": func(b *bolt.Bucket) error { return b.Put([]byte("court-a/W-2"), []byte{0, 0, 0, 0, 0, 0, 0, 1}) },
	} {
		t.Run(name, func(t *testing.T) {
			copyTree(t, snapshot, dir)
			editReplay(t, dir, edit)
			l := open(t, d, dir)
			err := l.Blocked()
			if !errors.Is(err, ledger.ErrStateMismatch) || !strings.Contains(err.Error(), "replay index") {
				t.Fatalf("Blocked() = %v, want ErrStateMismatch naming the replay index", err)
			}
		})
	}
	t.Run("untouched", func(t *testing.T) {
		copyTree(t, snapshot, dir)
		if err := open(t, d, dir).Blocked(); err != nil {
			t.Fatalf("the untouched copy is blocked: %v", err)
		}
	})
}

func editReplay(t *testing.T, dir string, edit func(*bolt.Bucket) error) {
	t.Helper()
	editIndex(t, dir, func(tx *bolt.Tx) error { return edit(tx.Bucket([]byte("replay"))) })
}

// TestInvariantStartupStateIsBoundToTPMBoundDirectoryIsBound: each way of
// changing a bound directory outside Ledger.Change blocks, naming it; a
// symlink is refused; an operator's resolve accepts it, logged.
func TestInvariantStartupStateIsBoundToTPMBoundDirectoryIsBound(t *testing.T) {
	d, dir, trustDir := boundDevice(t)
	l := create(t, d, dir)
	write := func(name, content string) func() error {
		return func() error {
			os.MkdirAll(filepath.Dir(filepath.Join(trustDir, name)), 0o700)
			return os.WriteFile(filepath.Join(trustDir, name), []byte(content), 0o600)
		}
	}
	change := ledger.Entry{Time: t0.Add(time.Minute), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
	for _, f := range []struct{ name, content string }{{"crls/a.pem", "crl 1"}, {"roots/a.pem", "root"}, {"crls/a.pem", "crl 2"}} {
		if _, err := l.Change("trust", change, []byte(f.content), write(f.name, f.content)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	good := filepath.Join(t.TempDir(), "good")
	copyTree(t, trustDir, good)

	for name, edit := range map[string]func() error{
		"older file restored": write("crls/a.pem", "crl 1"),
		"file removed":        func() error { return os.Remove(filepath.Join(trustDir, "roots/a.pem")) },
		"file added":          write("roots/b.pem", "another root"),
		"empty dir added":     func() error { return os.Mkdir(filepath.Join(trustDir, "extra"), 0o700) },
		"symlink":             func() error { return os.Symlink("/etc/passwd", filepath.Join(trustDir, "roots/c.pem")) },
		"whole dir removed":   func() error { return os.RemoveAll(trustDir) },
		"dir made a symlink": func() error {
			elsewhere := t.TempDir()
			os.CopyFS(elsewhere, os.DirFS(trustDir))
			os.RemoveAll(trustDir)
			return os.Symlink(elsewhere, trustDir)
		},
	} {
		t.Run(name, func(t *testing.T) {
			copyTree(t, good, trustDir)
			if err := edit(); err != nil {
				t.Fatal(err)
			}
			l := open(t, d, dir)
			if err := l.Blocked(); !errors.Is(err, ledger.ErrStateMismatch) {
				t.Fatalf("Blocked() = %v, want ErrStateMismatch", err)
			}
		})
	}
	t.Run("resolved by the operator", func(t *testing.T) {
		copyTree(t, good, trustDir)
		write("crls/a.pem", "crl 1")()
		l := open(t, d, dir)
		i, err := l.ResolveRollback(t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		last, _ := l.Entry(i)
		if e, err := ledger.ParseEntry(last); err != nil || e.Kind != ledger.KindResolve || e.Reason != "state" {
			t.Fatalf("resolve entry %+v, %v", e, err)
		}
		l.Close()
		if err := open(t, d, dir).Blocked(); err != nil {
			t.Fatalf("blocked after the resolve: %v", err)
		}
	})
	t.Run("symlink cannot be resolved", func(t *testing.T) {
		os.Symlink("/etc/passwd", filepath.Join(trustDir, "roots/c.pem"))
		defer os.Remove(filepath.Join(trustDir, "roots/c.pem"))
		l := open(t, d, dir)
		if _, err := l.ResolveRollback(t0.Add(2 * time.Hour)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("resolve accepted a symlink: %v", err)
		}
	})
}

// TestInvariantStartupStateIsBoundToTPMChangeSurvivesACrash takes the
// disk and the TPM counter as a crash would leave them at each step of a
// Change (everything before it was fsynced), and opens them: before the write, nothing changed
// and the change closes by itself; with only a temporary file, the same;
// after the write and before the entry, ErrChangeInterrupted until an
// operator accepts it; after the entry, unblocked with the change.
func TestInvariantStartupStateIsBoundToTPMChangeSurvivesACrash(t *testing.T) {
	d, dir, trustDir := boundDevice(t)
	l := create(t, d, dir)
	crl := filepath.Join(trustDir, "crl.pem")
	counters := map[string]uint64{}
	snap := func(name string) string {
		to := filepath.Join(t.TempDir(), name)
		copyTree(t, dir, to)
		counters[to] = tpmCounter(t, d)
		return to
	}
	var beforeWrite, afterWrite string
	e := ledger.Entry{Time: t0.Add(time.Minute), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
	_, err := l.Change("trust", e, []byte("crl"), func() error {
		beforeWrite = snap("before-write")
		os.MkdirAll(trustDir, 0o700)
		if err := os.WriteFile(crl, []byte("new crl"), 0o600); err != nil {
			return err
		}
		afterWrite = snap("after-write")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	size := l.Size()
	l.Close()
	done := snap("after-entry")

	// The TPM counter is as it was at the crash; the key is the device's.
	reopen := func(t *testing.T, from string) *ledger.Ledger {
		copyTree(t, from, dir)
		cfg := d.config(t)
		cfg.Counter = &fakeCounter{v: counters[from]}
		l, err := ledger.Open(dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	t.Run("before the write", func(t *testing.T) {
		l := reopen(t, beforeWrite)
		if err := l.Blocked(); err != nil || l.Size() != size-1 {
			t.Fatalf("blocked %v, size %d: want the state before the change", err, l.Size())
		}
	})
	t.Run("temporary file only", func(t *testing.T) {
		withTemp := filepath.Join(t.TempDir(), "temp")
		copyTree(t, beforeWrite, withTemp)
		counters[withTemp] = counters[beforeWrite]
		os.MkdirAll(filepath.Join(withTemp, "trust"), 0o700)
		os.WriteFile(filepath.Join(withTemp, "trust", ".crl.pem.tmp123456"), []byte("half"), 0o600)
		l := reopen(t, withTemp)
		if err := l.Blocked(); err != nil {
			t.Fatalf("blocked by a leftover temporary file: %v", err)
		}
		if _, err := os.Stat(filepath.Join(trustDir, ".crl.pem.tmp123456")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("the leftover temporary file is still there")
		}
	})
	t.Run("temporary file without a change under way", func(t *testing.T) {
		planted := filepath.Join(t.TempDir(), "planted")
		copyTree(t, done, planted)
		counters[planted] = counters[done]
		os.WriteFile(filepath.Join(planted, "trust", ".crl.pem.tmp123456"), []byte("planted"), 0o600)
		if err := reopen(t, planted).Blocked(); !errors.Is(err, ledger.ErrStateMismatch) {
			t.Fatalf("Blocked() = %v, want ErrStateMismatch", err)
		}
	})
	t.Run("after the write, before the entry", func(t *testing.T) {
		l := reopen(t, afterWrite)
		if err := l.Blocked(); !errors.Is(err, ledger.ErrChangeInterrupted) {
			t.Fatalf("Blocked() = %v, want ErrChangeInterrupted", err)
		}
		if _, err := l.ResolveRollback(t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		l.Close()
		cfg := d.config(t)
		cfg.Counter = &fakeCounter{v: counters[afterWrite] + 1}
		again, err := ledger.Open(dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if err := again.Blocked(); err != nil {
			t.Fatalf("blocked after the resolve: %v", err)
		}
		if data, _ := os.ReadFile(crl); string(data) != "new crl" {
			t.Fatalf("the change was lost: %q", data)
		}
	})
	t.Run("after the entry", func(t *testing.T) {
		l := reopen(t, done)
		if err := l.Blocked(); err != nil || l.Size() != size {
			t.Fatalf("blocked %v, size %d", err, l.Size())
		}
	})
}

// TestChangeThatFailsIsLoggedOnlyIfItChangedSomething: an apply that fails
// before writing logs nothing and leaves the ledger open; one that fails
// after writing logs a failure entry binding what it wrote.
func TestChangeThatFailsIsLoggedOnlyIfItChangedSomething(t *testing.T) {
	d, dir, trustDir := boundDevice(t)
	l := create(t, d, dir)
	e := ledger.Entry{Time: t0.Add(time.Minute), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
	size := l.Size()
	if _, err := l.Change("trust", e, nil, func() error { return errors.New("bad CRL") }); err == nil || l.Size() != size {
		t.Fatalf("err %v, size %d -> %d", err, size, l.Size())
	}
	_, err := l.Change("trust", e, nil, func() error {
		os.MkdirAll(trustDir, 0o700)
		os.WriteFile(filepath.Join(trustDir, "half.pem"), nil, 0o600)
		return errors.New("disk full")
	})
	if err == nil || l.Size() != size+1 {
		t.Fatalf("err %v, size %d -> %d", err, size, l.Size())
	}
	last, _ := l.Entry(size)
	if got, _ := ledger.ParseEntry(last); got.Kind != ledger.KindFailure || got.Reason != "change-failed" {
		t.Fatalf("logged %+v", got)
	}
	if _, err := l.Change("other", e, nil, func() error { return nil }); err == nil {
		t.Fatal("changed a directory that is not bound")
	}
	l.Close()
	if err := open(t, d, dir).Blocked(); err != nil {
		t.Fatalf("blocked after failed changes: %v", err)
	}
}

// TestInvariantStartupStateIsBoundToTPMNeedsTheKey: without the state key
// (the ledger key did not unseal) the ledger opens for reading and
// proving, refuses appends and cannot be resolved.
func TestInvariantStartupStateIsBoundToTPMNeedsTheKey(t *testing.T) {
	d, dir, _ := boundDevice(t)
	create(t, d, dir).Close()
	cfg := d.config(t)
	cfg.StateKey, cfg.Signer = nil, nil
	l, err := ledger.Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Blocked(); !errors.Is(err, ledger.ErrStateUnauthenticated) {
		t.Fatalf("Blocked() = %v, want ErrStateUnauthenticated", err)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.InclusionProof(0, l.Size()); err != nil {
		t.Fatal(err)
	}
	// Signed answers say why they cannot be had, so that the API maps
	// them to image_not_approved rather than an internal error.
	if _, err := l.ProveRange(0, 0); !errors.Is(err, ledger.ErrNoSigner) {
		t.Fatalf("a range proof without the key: %v", err)
	}
	if _, err := l.ResolveRollback(t0.Add(time.Hour)); !errors.Is(err, ledger.ErrStateUnauthenticated) {
		t.Fatalf("resolved without the key: %v", err)
	}
}

// TestInvariantStartupStateIsBoundToTPMHonestReopenStaysOpen: appends
// with and without replay keys, changes, reopening and a TPM power cycle
// with the same measurements leave the ledger unblocked.
func TestInvariantStartupStateIsBoundToTPMHonestReopenStaysOpen(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	conn := sw.Open(t)
	d := newDevice(t, conn)
	dir := t.TempDir()
	d.bound = []ledger.BoundDir{{Name: "trust", Path: filepath.Join(dir, "trust")}}
	l := create(t, d, dir)
	appendN(t, l, 2)
	e := ledger.Entry{Time: t0.Add(time.Hour), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
	if _, err := l.Append(e, nil, []byte("court-a/W-1")); err != nil {
		t.Fatal(err)
	}
	e.Kind = ledger.KindTrust
	if _, err := l.Change("trust", e, nil, func() error { return os.Mkdir(filepath.Join(dir, "trust"), 0o700) }); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = open(t, d, dir)
	if err := l.Blocked(); err != nil {
		t.Fatalf("blocked after reopen: %v", err)
	}
	l.Close()
	sw.PowerCycle(t, conn)
	measureBoot(t, conn)
	l = open(t, d, dir)
	if err := l.Blocked(); err != nil {
		t.Fatalf("blocked after a power cycle: %v", err)
	}
}

// TestInvariantStartupStateIsBoundToTPMSymlinkedDirIsRefused: a bound
// directory that was empty (or missing) when bound, replaced by a symlink
// to a directory of the attacker's, is refused: the readers would follow
// it.
func TestInvariantStartupStateIsBoundToTPMSymlinkedDirIsRefused(t *testing.T) {
	d, dir, trustDir := boundDevice(t)
	create(t, d, dir).Close()
	elsewhere := t.TempDir()
	os.WriteFile(filepath.Join(elsewhere, "root.pem"), []byte("the attacker's root"), 0o600)
	if err := os.Symlink(elsewhere, trustDir); err != nil {
		t.Fatal(err)
	}
	err := open(t, d, dir).Blocked()
	if !errors.Is(err, ledger.ErrStateMismatch) || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Blocked() = %v, want ErrStateMismatch for the symlink", err)
	}
}

// TestOpenRefusesADatabaseWithoutItsBuckets: a database with a bucket
// deleted is refused with a clear error, not a crash.
func TestOpenRefusesADatabaseWithoutItsBuckets(t *testing.T) {
	d, dir, _ := boundDevice(t)
	create(t, d, dir).Close()
	db, err := bolt.Open(filepath.Join(dir, ledger.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("replay")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := ledger.Open(dir, d.config(t)); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open = %v, want a damaged-database error", err)
	}
}
