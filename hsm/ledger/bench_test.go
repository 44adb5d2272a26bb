package ledger

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
)

var bigLedger = flag.Bool("ledger-1m", false, "also benchmark a ledger of 10^6 entries (builds ~1 GB of test data)")

// memCounter is a counter in memory, for building large ledgers in
// benchmarks only; the TPM's own cost is measured by BenchmarkAppend in
// the external tests.
type memCounter struct{ v uint64 }

func (c *memCounter) Read() (uint64, error)             { return c.v, nil }
func (c *memCounter) Create() (uint64, error)           { c.v = 1; return 1, nil }
func (c *memCounter) Increment() (uint64, error)        { c.v++; return c.v, nil }
func (c *memCounter) IncrementChecked() (uint64, error) { return c.Increment() }

// buildLedger makes a ledger of n entries quickly: many entries per
// transaction (one journal record each), which only a benchmark may do.
func buildLedger(b *testing.B, n int64) (string, *memCounter) {
	b.Helper()
	dir := b.TempDir()
	c := &memCounter{}
	l, err := Create(dir, benchConfig(c), time.Unix(1e9, 0))
	if err != nil {
		b.Fatal(err)
	}
	e := Entry{Time: time.Unix(1e9, 0).UTC(), Kind: KindRefusal, Outcome: OutcomeRefused,
		Reason: "no-press", KeyID: "2026-11", Commitment: make([]byte, 32)}
	for l.state.size < n {
		err := l.update(func(tx *wtx) error {
			if _, err := tx.full(); err != nil { // thousands of entries: bbolt reads them back faster than the recorded changes
				return err
			}
			for k := 0; k < 10000 && l.state.size < n; k++ {
				e.Counter = l.state.counter + 1
				data, _ := e.Marshal()
				next := l.state.clone()
				next.size, next.counter, next.last = next.size+1, e.Counter, e.Time
				if err := l.writeEntry(tx, l.state.size, data, make([]byte, 32), nil, &next); err != nil {
					return err
				}
				l.state = next
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	c.v = l.state.counter
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	return dir, c
}

func benchConfig(c Counter) Config {
	return Config{Origin: "bench", Counter: c, StateKey: make([]byte, StateKeySize)}
}

func sizes() []int64 {
	s := []int64{1e3, 1e5}
	if *bigLedger {
		s = append(s, 1e6)
	}
	return s
}

// BenchmarkProofsAndOpen measures, per ledger size, opening the ledger
// (start-up), an inclusion proof and a consistency proof, and reports the
// bytes on disk per entry.
func BenchmarkProofsAndOpen(b *testing.B) {
	for _, n := range sizes() {
		dir, c := buildLedger(b, n)
		info, err := os.Stat(filepath.Join(dir, FileName))
		if err != nil {
			b.Fatal(err)
		}
		cfg := benchConfig(c)
		b.Run(fmt.Sprintf("open/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				l, err := Open(dir, cfg)
				if err != nil || l.Blocked() != nil {
					b.Fatal(err, l.Blocked())
				}
				l.Close()
			}
			b.ReportMetric(float64(info.Size())/float64(n), "disk-bytes/entry")
		})
		l, err := Open(dir, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("inclusion/n=%d", n), func(b *testing.B) {
			i := int64(0)
			for b.Loop() {
				if _, err := l.InclusionProof(i%n, n); err != nil {
					b.Fatal(err)
				}
				i += 7919
			}
		})
		b.Run(fmt.Sprintf("consistency/n=%d", n), func(b *testing.B) {
			m := int64(1)
			for b.Loop() {
				if _, err := l.ConsistencyProof(1+m%(n-1), n); err != nil {
					b.Fatal(err)
				}
				m += 7919
			}
		})
		// What binding the state adds to each append (no TPM command):
		// the new tree hash, the canonical encoding and its HMAC.
		b.Run(fmt.Sprintf("bind-state/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				_ = l.db.View(func(tx *bolt.Tx) error {
					s := l.state.clone()
					var err error
					s.root, err = tlog.TreeHash(n, txHashReader{tx})
					_ = l.stateMAC(&s)
					return err
				})
			}
		})
		b.Run(fmt.Sprintf("tree-hash/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				_ = l.db.View(func(tx *bolt.Tx) error {
					_, err := tlog.TreeHash(n, txHashReader{tx})
					return err
				})
			}
		})
		l.Close()
	}
}
