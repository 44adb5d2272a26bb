package ledger_test

import (
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// BenchmarkAppend measures a durable append on swtpm: the bbolt commit
// with fsync and the NV counter increment, beside the increment alone.
func BenchmarkAppend(b *testing.B) {
	conn := tpmtest.StartSwtpm(b).Open(b)
	d := newDevice(b, conn)
	l := create(b, d, b.TempDir())
	b.Run("append", func(b *testing.B) {
		for b.Loop() {
			e := ledger.Entry{Time: t0.Add(time.Duration(l.Size()) * time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused}
			if _, err := l.Append(e, []byte("warrant"), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nv-increment-only", func(b *testing.B) {
		c := tpm.Counter{Index: tpm.DefaultCounterIndex}
		for b.Loop() {
			if _, err := c.Increment(conn); err != nil {
				b.Fatal(err)
			}
		}
	})
}
