package appliance_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// booted is an initialized appliance on swtpm, booted into image "v1".
type booted struct {
	sw   *tpmtest.Swtpm
	conn transport.TPM
	dir  string
	spec measure.Spec
	a    *appliance.Appliance
}

func bootAppliance(t *testing.T) *booted {
	t.Helper()
	sw := tpmtest.StartSwtpm(t)
	b := &booted{sw: sw, conn: sw.Open(t), dir: t.TempDir(), spec: measure.DefaultSpec()}
	b.boot(t, "v1")
	e, err := enrollment.Create(b.conn, "court-a", tpm.EKRSA2048, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(e)
	if err := os.WriteFile(filepath.Join(b.dir, appliance.EnrollmentFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if b.a, err = appliance.Init(b.dir, b.conn, b.spec.PCRs(), time.Now()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.a.Close() })
	return b
}

func (b *booted) boot(t *testing.T, image string) {
	t.Helper()
	if _, err := measure.Boot(b.conn, b.spec, measuretest.Root(image), t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// reopen closes the appliance and opens the data directory again, as a
// restart does.
func (b *booted) reopen(t *testing.T) {
	t.Helper()
	b.a.Close()
	a, err := appliance.Open(b.dir, b.conn)
	if err != nil {
		t.Fatal(err)
	}
	b.a = a
}

// provision makes a share-mode bundle of keyID for this device and stores it.
func (b *booted) provision(t *testing.T, keyID string) []byte {
	t.Helper()
	policy, err := b.spec.Predict(measuretest.Root("v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, bundles, err := escrow.Ceremony(keyID, 2, policy.PCRs,
		[]escrow.Member{{ID: "court-a", EK: b.a.EK, ImportKey: b.a.ImportKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
		escrow.WithMode(escrow.ModeShare))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := bundles[0].Marshal()
	if _, err := b.a.Provision(b.conn, data, time.Now()); err != nil {
		t.Fatal(err)
	}
	return data
}

// setTrust applies a trust store change as custodian trust does.
func (b *booted) setTrust(t *testing.T, subject []byte, apply func(*trust.Store) error) {
	t.Helper()
	s, err := trust.Open(filepath.Join(b.dir, appliance.TrustDir))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.a.ChangeTrust(subject, time.Now(), func() error { return apply(s) }); err != nil {
		t.Fatal(err)
	}
}

func replaceDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.RemoveAll(to); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), filepath.Base(dir))
	if err := os.CopyFS(to, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	return to
}

// TestInvariantStartupStateIsBoundToTPMRestoredTrustStoreIsBlocked: after
// a CRL revoking a judge is installed, restoring only the trust store with
// the older CRL, which is still in force, blocks releases. The operator
// resolves (logged) and installs the current CRL again.
func TestInvariantStartupStateIsBoundToTPMRestoredTrustStoreIsBlocked(t *testing.T) {
	b := bootAppliance(t)
	now := time.Now()
	root := trusttest.NewRoot(t, "Court Root", now)
	judge := root.Judge(t, "Judge", trusttest.ECKeyP256(t).Public(), now)
	b.setTrust(t, trusttest.PEM(root.Cert), func(s *trust.Store) error { _, err := s.AddRoot(trusttest.PEM(root.Cert), "Test Court"); return err })
	oldCRL := root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	b.setTrust(t, oldCRL, func(s *trust.Store) error { _, err := s.SetCRL(oldCRL, now); return err })
	trustDir := filepath.Join(b.dir, appliance.TrustDir)
	before := snapshotDir(t, trustDir)
	newCRL := root.CRL(t, now.Add(-time.Minute), now.Add(24*time.Hour), judge)
	b.setTrust(t, newCRL, func(s *trust.Store) error { _, err := s.SetCRL(newCRL, now); return err })
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); err != nil {
		t.Fatalf("blocked after honest trust changes: %v", err)
	}

	replaceDir(t, before, trustDir)
	restored, err := trust.Open(trustDir)
	if err != nil {
		t.Fatal(err)
	}
	if crl := restored.CRL(root.Cert); crl == nil || !crl.Fresh(now) || crl.Revoked(judge.SerialNumber) {
		t.Fatal("the restored store does not hold the older, still valid CRL; the test shows nothing")
	}
	b.reopen(t)
	err = b.a.Ledger.Blocked()
	if !errors.Is(err, ledger.ErrStateMismatch) || !strings.Contains(err.Error(), "trust/") {
		t.Fatalf("restored trust store: Blocked() = %v, want ErrStateMismatch naming trust/", err)
	}
	if err := b.a.Ledger.Verify(); err != nil {
		t.Fatalf("the ledger itself is intact and should verify: %v", err)
	}

	if _, err := b.a.Ledger.ResolveRollback(time.Now()); err != nil {
		t.Fatal(err)
	}
	b.setTrust(t, newCRL, func(s *trust.Store) error { _, err := s.SetCRL(newCRL, now); return err })
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); err != nil {
		t.Fatalf("blocked after the operator's resolve: %v", err)
	}
}

// TestInvariantStartupStateIsBoundToTPMRestoredBundleIsBlocked: a bundle
// removed, added, or replaced by another valid bundle for the same key ID
// blocks releases; the untouched directory does not.
func TestInvariantStartupStateIsBoundToTPMRestoredBundleIsBlocked(t *testing.T) {
	b := bootAppliance(t)
	b.provision(t, "2026-11")
	bundleDir := filepath.Join(b.dir, appliance.BundleDir)
	one := snapshotDir(t, bundleDir)
	b.provision(t, "2026-12")
	two := snapshotDir(t, bundleDir)

	// Another ceremony's bundle for the same key ID, valid for this device.
	policy, _ := b.spec.Predict(measuretest.Root("v1"), nil)
	_, bundles, err := escrow.Ceremony("2026-11", 2, policy.PCRs,
		[]escrow.Member{{ID: "court-a", EK: b.a.EK, ImportKey: b.a.ImportKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
		escrow.WithMode(escrow.ModeShare))
	if err != nil {
		t.Fatal(err)
	}
	replacement, _ := bundles[0].Marshal()

	for name, edit := range map[string]func() error{
		"one removed (older copy restored)": func() error { replaceDir(t, one, bundleDir); return nil },
		"one added": func() error {
			data, _ := os.ReadFile(filepath.Join(two, "2026-11.json"))
			return os.WriteFile(filepath.Join(bundleDir, "2027-01.json"), data, 0o600)
		},
		"one replaced": func() error {
			return os.WriteFile(filepath.Join(bundleDir, "2026-11.json"), replacement, 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			replaceDir(t, two, bundleDir)
			if err := edit(); err != nil {
				t.Fatal(err)
			}
			b.reopen(t)
			err := b.a.Ledger.Blocked()
			if !errors.Is(err, ledger.ErrStateMismatch) || !strings.Contains(err.Error(), "bundles/") {
				t.Fatalf("Blocked() = %v, want ErrStateMismatch naming bundles/", err)
			}
		})
	}
	t.Run("untouched", func(t *testing.T) {
		replaceDir(t, two, bundleDir)
		b.reopen(t)
		if err := b.a.Ledger.Blocked(); err != nil {
			t.Fatalf("Blocked() = %v", err)
		}
	})
}

// TestInvariantStartupStateIsBoundToTPMHonestOperationStaysOpen: trust
// changes, provisioning, appends, restarts and a power cycle back into the
// approved image leave the appliance unblocked; booting another image
// leaves it readable but blocked, and the approved image again opens it.
func TestInvariantStartupStateIsBoundToTPMHonestOperationStaysOpen(t *testing.T) {
	b := bootAppliance(t)
	now := time.Now()
	root := trusttest.NewRoot(t, "Court Root", now)
	b.setTrust(t, trusttest.PEM(root.Cert), func(s *trust.Store) error { _, err := s.AddRoot(trusttest.PEM(root.Cert), "Test Court"); return err })
	crl := root.CRL(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	b.setTrust(t, crl, func(s *trust.Store) error { _, err := s.SetCRL(crl, now); return err })
	bundle := b.provision(t, "2026-11")
	if _, err := b.a.Provision(b.conn, bundle, time.Now()); err != nil {
		t.Fatalf("provisioning the same bundle again: %v", err)
	}
	e := ledger.Entry{Time: time.Now().UTC().Truncate(time.Second), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: "2026-11"}
	if _, err := b.a.Ledger.Append(e, []byte("warrant"), []byte("root/W-1")); err != nil {
		t.Fatal(err)
	}
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); err != nil {
		t.Fatalf("blocked after a restart: %v", err)
	}

	b.a.Close()
	b.sw.PowerCycle(t, b.conn)
	b.boot(t, "v2")
	a, err := appliance.Open(b.dir, b.conn)
	if err != nil {
		t.Fatal(err)
	}
	b.a = a
	if err := a.Ledger.Blocked(); !errors.Is(err, ledger.ErrStateUnauthenticated) || a.SignerErr == nil {
		t.Fatalf("another image: Blocked() = %v, signer %v; want ErrStateUnauthenticated", err, a.SignerErr)
	}
	if _, err := a.Ledger.InclusionProof(0, a.Ledger.Size()); err != nil {
		t.Fatalf("reading on another image: %v", err)
	}

	b.a.Close()
	b.sw.PowerCycle(t, b.conn)
	b.boot(t, "v1")
	if b.a, err = appliance.Open(b.dir, b.conn); err != nil {
		t.Fatal(err)
	}
	if err := b.a.Ledger.Blocked(); err != nil {
		t.Fatalf("blocked after a power cycle into the approved image: %v", err)
	}
	if err := b.a.Ledger.Verify(); err != nil {
		t.Fatal(err)
	}
}
