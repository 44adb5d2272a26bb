package ledger_test

import (
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// BenchmarkAppend measures a durable append on swtpm: the bbolt commit
// with fsync, the state binding (HMAC, no TPM command) and the NV counter
// increment, beside the increment alone. Both report the TPM commands
// each sends. BenchmarkProofsAndOpen's bind-state gives the binding's
// share on its own.
func BenchmarkAppend(b *testing.B) {
	conn := &tpmtest.Recorder{TPM: tpmtest.StartSwtpm(b).Open(b)}
	d := newDevice(b, conn)
	l := create(b, d, b.TempDir())
	b.Run("append", func(b *testing.B) {
		conn.Reset()
		for b.Loop() {
			e := ledger.Entry{Time: t0.Add(time.Duration(l.Size()) * time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused}
			if _, err := l.Append(e, []byte("warrant"), nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(conn.Count())/float64(b.N), "tpm-commands/op")
	})
	b.Run("nv-increment-only", func(b *testing.B) {
		conn.Reset()
		c := tpm.Counter{Index: tpm.DefaultCounterIndex}
		for b.Loop() {
			if _, err := c.Increment(conn); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(conn.Count())/float64(b.N), "tpm-commands/op")
	})
}

// TestInvariantStartupStateBindingAddsNoTPMCommand: an append sends the
// TPM exactly what the NV counter increment sends, nothing for binding the
// state.
func TestInvariantStartupStateBindingAddsNoTPMCommand(t *testing.T) {
	conn := &tpmtest.Recorder{TPM: tpmtest.StartSwtpm(t).Open(t)}
	d := newDevice(t, conn)
	l := create(t, d, t.TempDir())
	appendN(t, l, 1) // the counter's first increment changes its Name: settle it
	conn.Reset()
	appendN(t, l, 1)
	perAppend := conn.Count()
	conn.Reset()
	if _, err := (tpm.Counter{Index: tpm.DefaultCounterIndex}).Increment(conn); err != nil {
		t.Fatal(err)
	}
	if perAppend != conn.Count() || perAppend == 0 {
		t.Fatalf("an append sent %d TPM commands, the increment alone %d", perAppend, conn.Count())
	}
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
