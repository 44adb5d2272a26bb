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
