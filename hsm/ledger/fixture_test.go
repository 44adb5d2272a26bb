package ledger_test

import (
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

const origin = "custodian/court-a"

// device is one appliance's TPM state as the ledger sees it.
type device struct {
	conn  transport.TPM
	ek    *tpm.EK
	key   *ledger.SigningKey
	bound []ledger.BoundDir // none unless a test binds some
}

// newDevice provisions the TPM's EK, measures a boot, makes the
// checkpoint key sealed to that boot and anchors it in the TPM.
func newDevice(t testing.TB, conn transport.TPM) *device {
	t.Helper()
	ek, importKey := tpmtest.ProvisionKeys(t, conn)
	measureBoot(t, conn)
	pcrs, err := tpm.ReadPCRs(conn, 8, 9)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ledger.NewSigningKey(origin, importKey, pcrs, tpmtest.Floor(t, conn))
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Anchor(conn); errors.Is(err, tpm.ErrAnchorTaken) {
		// Only a hardware TPM outlives a test: it keeps its first anchor.
		t.Skip("this TPM anchored another ledger key in an earlier test, for good (one per TPM life)")
	} else if err != nil {
		t.Fatal(err)
	}
	return &device{conn: conn, ek: ek, key: key}
}

// measureBoot extends what the approved image's boot extends.
func measureBoot(t testing.TB, conn transport.TPM) {
	t.Helper()
	for i, m := range []string{"root filesystem", "custodian binary"} {
		d := sha256.Sum256([]byte(m))
		if err := tpm.ExtendPCR(conn, 8+i, d[:]); err != nil {
			t.Fatal(err)
		}
	}
}

func (d *device) config(t testing.TB) ledger.Config {
	t.Helper()
	signer, stateKey, err := d.key.Open(d.conn)
	if err != nil {
		t.Fatal(err)
	}
	return ledger.Config{
		Origin:   origin,
		Device:   d.ek.Name(),
		Counter:  &ledger.TPMCounter{TPM: d.conn, Counter: tpm.Counter{Index: tpm.DefaultCounterIndex}},
		Signer:   signer,
		StateKey: stateKey,
		Bound:    d.bound,
	}
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func create(t testing.TB, d *device, dir string) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Create(dir, d.config(t), t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func open(t testing.TB, d *device, dir string) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// appendN appends n refusals, one second apart after t0.
func appendN(t testing.TB, l *ledger.Ledger, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		e := ledger.Entry{
			Time: t0.Add(time.Duration(l.Size()) * time.Second), Kind: ledger.KindRefusal,
			Outcome: ledger.OutcomeRefused, Reason: "no-press", KeyID: "2026-11",
		}
		if _, err := l.Append(e, []byte("warrant bytes"), nil); err != nil {
			t.Fatal(err)
		}
	}
}
