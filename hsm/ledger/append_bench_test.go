package ledger_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// BenchmarkAppend measures a durable append on swtpm: its journal record
// (one fdatasync), the state binding (HMAC, no TPM command) and the NV
// counter increment, beside the increment alone and beside the floor: one
// fsync of an entry-sized record and one TPM2_NV_Increment (of a second
// counter, so the ledger's stays its own). ratio runs an append and the
// floor in turn, in alternating order, and reports the append as a
// multiple of the floor (x-floor). ledger.db's commit (no sync), which
// runs after the append returns, is waited for outside both timings and
// reported on its own (ns-index-after). Each reports the TPM commands it
// sends. BenchmarkProofsAndOpen's bind-state gives the binding's share on
// its own.
func BenchmarkAppend(b *testing.B) {
	conn := &tpmtest.Recorder{TPM: tpmtest.StartSwtpm(b).Open(b)}
	d := newDevice(b, conn)
	l := create(b, d, b.TempDir())
	appendOne := func(b *testing.B) {
		e := ledger.Entry{Time: t0.Add(time.Duration(l.Size()) * time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused}
		if _, err := l.Append(e, []byte("warrant"), nil); err != nil {
			b.Fatal(err)
		}
	}
	floorCounter := tpm.Counter{Index: tpm.DefaultCounterIndex + 0x10}
	if _, err := floorCounter.Create(conn); err != nil {
		b.Fatal(err)
	}
	record, err := os.OpenFile(filepath.Join(b.TempDir(), "floor"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer record.Close()
	entry := make([]byte, 256) // an entry, its salt and its hashes
	floor := func(b *testing.B) {
		if _, err := record.Write(entry); err != nil {
			b.Fatal(err)
		}
		if err := record.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := floorCounter.Bump(conn); err != nil {
			b.Fatal(err)
		}
	}
	perOp := func(b *testing.B) {
		b.ReportMetric(float64(conn.Count())/float64(b.N), "tpm-commands/op")
	}
	b.Run("append", func(b *testing.B) {
		conn.Reset()
		for b.Loop() {
			appendOne(b)
		}
		perOp(b)
	})
	b.Run("nv-increment-only", func(b *testing.B) {
		conn.Reset()
		for b.Loop() {
			if err := floorCounter.Bump(conn); err != nil {
				b.Fatal(err)
			}
		}
		perOp(b)
	})
	b.Run("floor", func(b *testing.B) {
		conn.Reset()
		for b.Loop() {
			floor(b)
		}
		perOp(b)
	})
	b.Run("ratio", func(b *testing.B) {
		var app, fl, index time.Duration
		timed := func(f func(*testing.B), into *time.Duration) {
			start := time.Now()
			f(b)
			*into += time.Since(start)
		}
		appendThenIndex := func(b *testing.B) {
			timed(appendOne, &app)
			start := time.Now()
			l.WaitIndexed()
			index += time.Since(start)
		}
		appendFirst := true
		for b.Loop() {
			// The two swap places each time, so that neither always
			// runs on a disk or TPM the other just left busy.
			if appendFirst {
				appendThenIndex(b)
				timed(floor, &fl)
			} else {
				timed(floor, &fl)
				appendThenIndex(b)
			}
			appendFirst = !appendFirst
		}
		b.ReportMetric(float64(app)/float64(b.N), "ns-append")
		b.ReportMetric(float64(fl)/float64(b.N), "ns-floor")
		b.ReportMetric(float64(index)/float64(b.N), "ns-index-after")
		b.ReportMetric(float64(app)/float64(fl), "x-floor")
		b.ReportMetric(0, "ns/op")
	})
}

// TestInvariantStartupStateBindingAddsNoTPMCommand: an append sends the
// TPM one command, TPM2_NV_Increment of the ledger's counter, nothing
// for binding the state and nothing to read the counter back.
func TestInvariantStartupStateBindingAddsNoTPMCommand(t *testing.T) {
	conn := &tpmtest.Recorder{TPM: tpmtest.StartSwtpm(t).Open(t)}
	d := newDevice(t, conn)
	l := create(t, d, t.TempDir())
	appendN(t, l, 1)
	counter := tpm.Counter{Index: tpm.DefaultCounterIndex}
	before, err := counter.Read(conn)
	if err != nil {
		t.Fatal(err)
	}
	conn.Reset()
	appendN(t, l, 1)
	sent := conn.Exchanges()
	if len(sent) != 1 || commandCode(sent[0].Command) != tpm2.TPMCCNVIncrement {
		t.Fatalf("an append sent %d TPM commands (%v), want one NV_Increment", len(sent), codes(sent))
	}
	if after, err := counter.Read(conn); err != nil || after != before+1 {
		t.Fatalf("the TPM counter went from %d to %d (%v) in one append", before, after, err)
	}
}

// TestCounterIncrementedOutsideIsRefusedAtNextOpen: an increment of the
// ledger's counter by anyone else while the ledger is open, which the
// appends' single NV_Increment does not see, blocks the ledger at its next
// open as a rolled-back copy would.
func TestCounterIncrementedOutsideIsRefusedAtNextOpen(t *testing.T) {
	conn := tpmtest.StartSwtpm(t).Open(t)
	d := newDevice(t, conn)
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 1)
	if _, err := (tpm.Counter{Index: tpm.DefaultCounterIndex}).Increment(conn); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1)
	l.Close()
	if err := open(t, d, dir).Blocked(); !errors.Is(err, ledger.ErrRolledBack) {
		t.Fatalf("after an increment outside the ledger: Blocked() = %v, want ErrRolledBack", err)
	}
}

// TestInvariantConcurrentCopyCannotSpendAWarrantTwice: a copy of the data
// directory opened beside the original on the same TPM, before either
// appends. The original spends replay key W; the copy's append of the
// same W reads the counter back, finds it ahead and blocks, so W is not
// spent twice. An append without a replay key keeps its one command.
func TestInvariantConcurrentCopyCannotSpendAWarrantTwice(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir, clone := t.TempDir(), t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 1)
	l.Close()
	copyDir(t, dir, clone)
	original, copied := open(t, d, dir), open(t, d, clone)
	for _, l := range []*ledger.Ledger{original, copied} {
		if err := l.Blocked(); err != nil {
			t.Fatalf("opened blocked: %v", err)
		}
	}

	w := []byte("court-a root|serial 42")
	rel := ledger.Entry{Time: t0.Add(time.Minute), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: "2026-11"}
	if _, err := original.Append(rel, []byte("warrant 42"), w); err != nil {
		t.Fatal(err)
	}
	if _, err := copied.Append(rel, []byte("warrant 42"), w); !errors.Is(err, ledger.ErrCounterAhead) {
		t.Fatalf("the copy spent warrant W after the original did: %v, want ErrCounterAhead", err)
	}
	if err := copied.Blocked(); err == nil {
		t.Fatal("the copy stays open for appends after finding the counter ahead")
	}
}

func commandCode(cmd []byte) tpm2.TPMCC {
	if len(cmd) < 10 {
		return 0
	}
	return tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
}

func codes(ex []tpmtest.Exchange) []tpm2.TPMCC {
	var out []tpm2.TPMCC
	for _, e := range ex {
		out = append(out, commandCode(e.Command))
	}
	return out
}

// BenchmarkOpenKey measures opening the checkpoint key at start-up on
// swtpm: the bus-safe unseal alone, the key's Open (unseal, then the
// TPM's anchor check), and the anchor check alone, each with the TPM
// commands it sends.
func BenchmarkOpenKey(b *testing.B) {
	conn := &tpmtest.Recorder{TPM: tpmtest.StartSwtpm(b).Open(b)}
	d := newDevice(b, conn)
	digest := ledger.AnchorDigest(d.key.Verifier)
	for name, open := range map[string]func() error{
		"unseal-only":  func() error { _, err := tpm.Unseal(conn, d.key.Sealed); return err },
		"open-key":     func() error { _, _, err := d.key.Open(conn); return err },
		"anchor-check": func() error { return tpm.CheckAnchor(conn, digest) },
	} {
		b.Run(name, func(b *testing.B) {
			conn.Reset()
			for b.Loop() {
				if err := open(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(conn.Count())/float64(b.N), "tpm-commands/op")
		})
	}
}

// TestInvariantStartupStateAnchorCheckCostsTwoTPMCommands: opening the
// checkpoint key sends two TPM commands more than unsealing it
// (NV_ReadPublic and NV_Read of the anchor), and appends send none for it
// (TestInvariantStartupStateBindingAddsNoTPMCommand).
func TestInvariantStartupStateAnchorCheckCostsTwoTPMCommands(t *testing.T) {
	conn := &tpmtest.Recorder{TPM: tpmtest.StartSwtpm(t).Open(t)}
	d := newDevice(t, conn)
	conn.Reset()
	if _, err := tpm.Unseal(conn, d.key.Sealed); err != nil {
		t.Fatal(err)
	}
	unseal := conn.Count()
	conn.Reset()
	if _, _, err := d.key.Open(conn); err != nil {
		t.Fatal(err)
	}
	if open := conn.Count(); open != unseal+2 || unseal == 0 {
		t.Fatalf("opening the key sent %d TPM commands, unsealing it %d; want 2 more", open, unseal)
	}
}
