package tests

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	be "encoding/binary"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantNothingOutsideCanMakeItWriteTPMNV: only accountable
// (verified) requests get per-request entries. Malformed, unverifiable,
// oversized, busy and rate-limited submissions write no ledger entry, no
// file, and nothing to TPM NV (the NV counter read on swtpm, and every
// command on the TPM bus checked) until the interval ends; then exactly
// one unverified entry counts them by code. A warrant whose signatures
// verified and that is refused still gets its own entry, once; the same
// bytes again are counted.
func TestInvariantNothingOutsideCanMakeItWriteTPMNV(t *testing.T) {
	r := newRig(t)
	r.court.install(t, r.a, time.Now().UTC())
	r.srv.Close()
	r.daemon.Close()
	r.tally = time.Hour // moved past with the rig's clock, not waited for
	r.start(t)
	stopped := false
	defer func() {
		if !stopped {
			r.stop()
		}
	}()

	size0, nv0 := r.a.Ledger.Size(), r.nvCounter(t)
	files0 := dirState(t, r.d.data)
	r.rec.Reset()
	want := map[string]uint64{}
	counted := func(c *client, p7s []byte) {
		t.Helper()
		status, st, eb := c.submit(t, p7s)
		if status == http.StatusAccepted || eb.Error.LedgerIndex != nil || eb.Error.Code == "" {
			t.Fatalf("%d %+v %+v: want a refusal without an entry", status, st, eb)
		}
		want[string(eb.Error.Code)]++
	}

	// Malformed, unverifiable and oversized submissions.
	stranger := newCourt(t, time.Now().UTC()) // a court this custodian does not trust
	good := r.warrant(t, "W-good")
	for i := range 30 {
		switch i % 6 {
		case 0:
			junk := make([]byte, 512)
			rand.Read(junk)
			counted(r.c, junk)
		case 1:
			counted(r.c, nil)
		case 2:
			counted(r.c, stranger.sign(t, fmt.Sprintf("W-stranger-%d", i), r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, time.Now().UTC()))
		case 3:
			tampered := bytes.Clone(good)
			tampered[len(tampered)/2] ^= 0x01
			counted(r.c, tampered)
		case 4:
			counted(r.c, good[:len(good)-1])
		case 5:
			counted(r.c, bytes.Repeat([]byte{0x30}, release.MaxBody+1))
		}
	}
	// A flood past the per-client and the global rate: 429, counted.
	for _, api := range []*release.API{
		{Daemon: r.daemon, Limit: release.NewLimiter(0.001, 3), Global: release.NewLimiter(1000, 1000)},
		{Daemon: r.daemon, Limit: release.NewLimiter(1000, 1000), Global: release.NewLimiter(0.001, 2)},
	} {
		srv := httptest.NewServer(api.Handler())
		c := &client{base: srv.URL, http: srv.Client()}
		limited := 0
		for range 40 {
			status, _, eb := c.submit(t, []byte("flood"))
			if status == http.StatusTooManyRequests {
				if eb.Error.Code != release.CodeRateLimited {
					t.Fatalf("429 with %+v", eb)
				}
				limited++
			} else if eb.Error.LedgerIndex != nil {
				t.Fatalf("a flood request was logged: %+v", eb)
			}
			want[string(eb.Error.Code)]++
		}
		srv.Close()
		if limited < 30 {
			t.Fatalf("%d of 40 flood requests rate limited", limited)
		}
	}
	if got := r.a.Ledger.Size(); got != size0 {
		t.Fatalf("%d ledger entries for unverified traffic", got-size0)
	}
	if nv := r.nvCounter(t); nv != nv0 {
		t.Fatalf("the NV counter moved from %d to %d", nv0, nv)
	}
	if n := nvWrites(r.rec); n != 0 {
		t.Fatalf("%d NV-writing commands crossed the TPM bus", n)
	}
	if files := dirState(t, r.d.data); !maps.Equal(files, files0) {
		t.Fatalf("the data directory changed:\nbefore %v\nafter  %v", files0, files)
	}

	// Busy: the verified warrant awaiting the press gets its no_press
	// entry; the ones refused as busy are counted; the same warrant
	// refused again is counted.
	status, pending, eb := r.c.submit(t, good)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	counted(r.c, r.warrant(t, "W-busy-1"))
	counted(r.c, r.warrant(t, "W-busy-2"))
	if st := r.c.wait(t, pending.ID); st.Code != release.CodeNoPress {
		t.Fatalf("pending: %+v", st)
	}
	r.expectOwnEntry(t, size0, release.CodeNoPress)
	if status, pending, _ = r.c.submit(t, good); status != http.StatusAccepted {
		t.Fatalf("submit again: %d", status)
	}
	if st := r.c.wait(t, pending.ID); st.Code != release.CodeNoPress || st.LedgerIndices[""] != -1 {
		t.Fatalf("the same no_press again: %+v", st)
	}
	want[string(release.CodeNoPress)]++

	// A verified warrant refused: its own entry, once. The same content
	// in other CMS bytes (here signed again: an ECDSA signature differs
	// each time) is the same warrant: counted.
	draft := draftWarrant("W-elsewhere", r.agency.Public(), []string{"court-q"}, []string{"2026-11"}, time.Now().UTC())
	signedAt := time.Now()
	other := r.court.signDocument(t, draft, signedAt)
	r.expectRefusal(t, other, "not_addressed", true)
	counted(r.c, other)
	if again := r.court.signDocument(t, draft, signedAt); bytes.Equal(again, other) {
		t.Fatal("two signatures gave the same bytes")
	} else {
		counted(r.c, again)
	}
	if got := r.a.Ledger.Size(); got != size0+2 {
		t.Fatalf("%d entries, want the two of verified warrants", got-size0)
	}
	if nv := r.nvCounter(t); nv != nv0+2 {
		t.Fatalf("NV counter %d, want %d", nv, nv0+2)
	}
	if got := r.daemon.Counted(); !maps.Equal(got, want) {
		t.Fatalf("counted %v, want %v", got, want)
	}

	// The interval ends: one unverified entry with the counts, one NV
	// increment.
	r.skew.Store(int64(61 * time.Minute))
	waitFor(t, "the unverified entry", 30*time.Second, func() bool { return r.a.Ledger.Size() == size0+3 })
	e := r.c.entryAt(t, size0+2, r.a.VerifierKey)
	if e.Kind != ledger.KindUnverified || !maps.Equal(e.Counts, want) {
		t.Fatalf("unverified entry %+v, want counts %v", e, want)
	}
	if nv := r.nvCounter(t); nv != nv0+3 {
		t.Fatalf("NV counter %d, want %d", nv, nv0+3)
	}
	if got := r.daemon.Counted(); len(got) != 0 {
		t.Fatalf("still counted after the entry: %v", got)
	}
	// Idle: the next interval and the shutdown write nothing.
	r.skew.Store(int64(3 * time.Hour))
	r.srv.Close()
	r.daemon.Close()
	stopped = true
	defer r.a.Close()
	if got := r.a.Ledger.Size(); got != size0+3 {
		t.Fatalf("%d entries after an idle interval and shutdown, want %d", got, size0+3)
	}
	if err := r.a.Ledger.Verify(); err != nil {
		t.Fatal(err)
	}
}

// expectOwnEntry checks that the newest entry is a refusal for code and
// that it is the only one since size.
func (r *rig) expectOwnEntry(t testing.TB, size0 int64, code release.Code) {
	t.Helper()
	n := r.a.Ledger.Size()
	data, err := r.a.Ledger.Entry(n - 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ledger.ParseEntry(data)
	if err != nil || e.Kind != ledger.KindRefusal || e.Reason != string(code) || n != size0+1 {
		t.Fatalf("entries since %d: %d, newest %+v (%v); want one %s refusal", size0, n-size0, e, err, code)
	}
}

// nvCounter reads the ledger's NV counter from the TPM.
func (r *rig) nvCounter(t testing.TB) uint64 {
	t.Helper()
	v, err := tpm.Counter{Index: tpm.DefaultCounterIndex}.Read(r.tpm)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// nvWrites counts the recorded commands that write TPM NV.
func nvWrites(rec *tpmtest.Recorder) int {
	n := 0
	for _, x := range rec.Exchanges() {
		if len(x.Command) < 10 {
			continue
		}
		switch tpm2.TPMCC(be.BigEndian.Uint32(x.Command[6:10])) {
		case tpm2.TPMCCNVIncrement, tpm2.TPMCCNVWrite, tpm2.TPMCCNVExtend, tpm2.TPMCCNVSetBits,
			tpm2.TPMCCNVDefineSpace, tpm2.TPMCCNVUndefineSpace, tpm2.TPMCCNVWriteLock:
			n++
		}
	}
	return n
}

// dirState maps each file under dir to its size, time and contents' hash.
func dirState(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[path] = fmt.Sprintf("%d %s %x", info.Size(), info.ModTime().Format(time.RFC3339Nano), sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
