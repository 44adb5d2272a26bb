package ledger_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestLedgerListRange: a range proof carries exactly the asked entries,
// each proven against one signed checkpoint, and Check refuses an answer
// with an entry altered, missing, out of order or from another range.
func TestLedgerListRange(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		l := create(t, d, t.TempDir())
		appendN(t, l, ledger.MaxRange+2) // with init: MaxRange+3 entries
		size := l.Size()

		rp, err := l.ProveRange(0, ledger.MaxRange-1)
		if err != nil {
			t.Fatal(err)
		}
		cp, entries, err := rp.Check(d.key.Verifier, 0, ledger.MaxRange-1)
		if err != nil {
			t.Fatal(err)
		}
		if int64(cp.Size) != size || len(entries) != ledger.MaxRange || entries[0].Kind != ledger.KindInit || entries[1].Kind != ledger.KindRefusal {
			t.Fatalf("checkpoint of %d, %d entries", cp.Size, len(entries))
		}
		for i, re := range rp.Entries {
			if want, _ := l.Entry(int64(i)); re.Entry != string(want) {
				t.Fatalf("entry %d differs from the ledger's", i)
			}
		}
		last, err := l.ProveRange(size-1, size-1)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := last.Check(d.key.Verifier, size-1, size-1); err != nil {
			t.Fatal(err)
		}

		for name, r := range map[string][2]int64{
			"past the end": {size - 1, size}, "inverted": {3, 2}, "negative": {-1, 2},
			"too long": {0, ledger.MaxRange},
		} {
			if _, err := l.ProveRange(r[0], r[1]); !errors.Is(err, ledger.ErrBadRange) {
				t.Errorf("%s: %v", name, err)
			}
		}
		if err := ledger.CheckRange(0, size, size); err == nil || !strings.Contains(err.Error(), "0 to") {
			t.Errorf("past the end says %v", err)
		}

		small, err := l.ProveRange(2, 5)
		if err != nil {
			t.Fatal(err)
		}
		tamper := map[string]func(rp *ledger.RangeProof) (from, to int64){
			"entry altered": func(rp *ledger.RangeProof) (int64, int64) {
				rp.Entries[1].Entry = strings.Replace(rp.Entries[1].Entry, "no-press", "bad-cms", 1)
				return 2, 5
			},
			"entry missing": func(rp *ledger.RangeProof) (int64, int64) {
				rp.Entries = rp.Entries[:3]
				return 2, 5
			},
			"out of order": func(rp *ledger.RangeProof) (int64, int64) {
				rp.Entries[0], rp.Entries[1] = rp.Entries[1], rp.Entries[0]
				return 2, 5
			},
			"another range": func(rp *ledger.RangeProof) (int64, int64) { return 3, 6 },
			"renumbered": func(rp *ledger.RangeProof) (int64, int64) {
				for i := range rp.Entries {
					rp.Entries[i].Index++
				}
				return 3, 6
			},
		}
		for name, f := range tamper {
			copy := *small
			copy.Entries = append([]ledger.RangeEntry(nil), small.Entries...)
			from, to := f(&copy)
			if _, _, err := copy.Check(d.key.Verifier, from, to); err == nil {
				t.Errorf("%s: verified", name)
			}
		}
	})
}

// FuzzRangeProofCheck: whatever a server answers, checking it never
// panics, and nothing verifies under a key that signed nothing.
func FuzzRangeProofCheck(f *testing.F) {
	_, verifier, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"checkpoint":"custodian/court-a\n1\nAAAA\n\n— custodian/court-a AAAA\n","entries":[{"index":0,"entry":"x","proof":[]}]}`), int64(0), int64(0))
	f.Add([]byte(`{"entries":[]}`), int64(0), int64(-1))
	f.Fuzz(func(t *testing.T, data []byte, from, to int64) {
		var rp ledger.RangeProof
		if json.Unmarshal(data, &rp) != nil {
			return
		}
		if _, _, err := rp.Check(verifier, from, to); err == nil {
			t.Fatalf("an answer verified under a key that signed nothing: %q", data)
		}
	})
}
