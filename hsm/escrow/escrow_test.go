package escrow_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// custodian is one appliance in a test: its own swtpm, booted.
type custodian struct {
	id        string
	conn      transport.TPM
	ek        *tpm.EK
	importKey *tpm.ImportKey
}

// boot measures the same image into PCRs 8 and 9 on every custodian.
func boot(t testing.TB, conn transport.TPM, image string) tpm.PCRValues {
	t.Helper()
	for i, m := range []string{"root filesystem", image} {
		d := sha256.Sum256([]byte(m))
		if err := tpm.ExtendPCR(conn, 8+i, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	pcrs, err := tpm.ReadPCRs(conn, 8, 9)
	if err != nil {
		t.Fatal(err)
	}
	return pcrs
}

func fleet(t testing.TB, n int) ([]*custodian, tpm.PCRValues) {
	t.Helper()
	var cs []*custodian
	var pcrs tpm.PCRValues
	for i := 0; i < n; i++ {
		conn := tpmtest.StartSwtpm(t).Open(t)
		ek, importKey := tpmtest.ProvisionKeys(t, conn)
		tpmtest.Floor(t, conn)
		pcrs = boot(t, conn, "custodian v1")
		cs = append(cs, &custodian{id: fmt.Sprintf("court-%c", 'a'+i), conn: conn, ek: ek, importKey: importKey})
	}
	return cs, pcrs
}

func members(cs []*custodian) []escrow.Member {
	var ms []escrow.Member
	for _, c := range cs {
		ms = append(ms, escrow.Member{ID: c.id, EK: c.ek, ImportKey: c.importKey})
	}
	return ms
}

// releaseShare does what an appliance does for a verified, approved
// warrant: open its share in the TPM and seal it to the agency.
func releaseShare(t testing.TB, c *custodian, b *escrow.Bundle, to *recipient.PublicKey) *escrow.Release {
	t.Helper()
	blob, err := tpm.ParseBlob(b.Blob)
	if err != nil {
		t.Fatal(err)
	}
	share, err := tpm.Unseal(c.conn, blob)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("warrant"))
	r, err := escrow.SealShare(to, digest[:], c.id, b.Escrow.KeyID, b.Index, share)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := r.Marshal()
	r, err = escrow.ParseRelease(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func reparseBundles(t *testing.T, bundles []*escrow.Bundle) []*escrow.Bundle {
	t.Helper()
	out := make([]*escrow.Bundle, len(bundles))
	for i, b := range bundles {
		data, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = escrow.ParseBundle(data); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// subsets lists every subset of {0..n-1} of size k.
func subsets(n, k int) [][]int {
	if k == 0 {
		return [][]int{nil}
	}
	var out [][]int
	for first := 0; first <= n-k; first++ {
		for _, rest := range subsets(n-first-1, k-1) {
			s := []int{first}
			for _, r := range rest {
				s = append(s, first+1+r)
			}
			out = append(out, s)
		}
	}
	return out
}

func TestCeremonyProvisionRecover(t *testing.T) {
	for _, tc := range []struct{ threshold, n int }{{2, 3}, {3, 5}} {
		t.Run(fmt.Sprintf("%d-of-%d", tc.threshold, tc.n), func(t *testing.T) {
			cs, pcrs := fleet(t, tc.n)
			pub, bundles, err := escrow.Ceremony("2026-11", tc.threshold, pcrs, members(cs), escrow.WithMode(escrow.ModeShare))
			if err != nil {
				t.Fatal(err)
			}
			bundles = reparseBundles(t, bundles)
			for i, c := range cs {
				if err := escrow.Provision(c.conn, bundles[i], c.id, c.importKey); err != nil {
					t.Fatalf("provisioning %s: %v", c.id, err)
				}
			}
			agency, _ := recipient.Generate("")
			releases := make([]*escrow.Release, tc.n)
			for i, c := range cs {
				releases[i] = releaseShare(t, c, bundles[i], agency.Public())
			}
			var first string
			for _, subset := range subsets(tc.n, tc.threshold) {
				var rs []*escrow.Release
				for _, i := range subset {
					rs = append(rs, releases[i])
				}
				key, err := escrow.Recover(agency, pub, rs)
				if err != nil {
					t.Fatalf("subset %v: %v", subset, err)
				}
				if !bytes.Equal(key.PublicKey(), pub.PublicKey) {
					t.Fatalf("subset %v recovered another key", subset)
				}
				if first == "" {
					first = key.String()
				} else if key.String() != first {
					t.Fatalf("subset %v recovered a different scalar", subset)
				}
			}
			for _, subset := range subsets(tc.n, tc.threshold-1) {
				var rs []*escrow.Release
				for _, i := range subset {
					rs = append(rs, releases[i])
				}
				if _, err := escrow.Recover(agency, pub, rs); !errors.Is(err, escrow.ErrNotEnoughShares) {
					t.Fatalf("subset %v of %d shares: %v, want ErrNotEnoughShares", subset, len(rs), err)
				}
			}
		})
	}
}

func TestProvisionRefusesWrongPlaceOrState(t *testing.T) {
	cs, pcrs := fleet(t, 3)
	_, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, members(cs), escrow.WithMode(escrow.ModeShare))
	if err != nil {
		t.Fatal(err)
	}
	a, b := cs[0], cs[1]
	if err := escrow.Provision(b.conn, bundles[0], b.id, b.importKey); !errors.Is(err, escrow.ErrOtherCustodian) {
		t.Errorf("bundle for %s on %s: %v", a.id, b.id, err)
	}
	if err := escrow.Provision(b.conn, bundles[0], a.id, b.importKey); !errors.Is(err, escrow.ErrOtherTPM) {
		t.Errorf("bundle moved to another TPM: %v", err)
	}
	// Even when the device's own check is bypassed, its TPM refuses.
	blob, _ := tpm.ParseBlob(bundles[0].Blob)
	if _, err := tpm.Unseal(b.conn, blob); !errors.Is(err, tpm.ErrWrongKey) {
		t.Errorf("another TPM unsealing: %v", err)
	}
	boot(t, a.conn, "an unapproved binary")
	if err := escrow.Provision(a.conn, bundles[0], a.id, a.importKey); !errors.Is(err, tpm.ErrPCRMismatch) {
		t.Errorf("after a PCR change: %v", err)
	}
}

func TestRecoverNamesBadCustodianAndRefusesDuplicates(t *testing.T) {
	cs, pcrs := fleet(t, 3)
	pub, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, members(cs), escrow.WithMode(escrow.ModeShare))
	if err != nil {
		t.Fatal(err)
	}
	agency, _ := recipient.Generate("")
	var rs []*escrow.Release
	for i, c := range cs {
		rs = append(rs, releaseShare(t, c, bundles[i], agency.Public()))
	}
	// court-b seals a share of its own making: right format, wrong value.
	forged := make([]byte, 32)
	forged[31] = 7
	wrong, err := escrow.SealShare(agency.Public(), rs[1].WarrantDigest, "court-b", "2026-11", 2, forged)
	if err != nil {
		t.Fatal(err)
	}
	key, err := escrow.Recover(agency, pub, []*escrow.Release{rs[0], wrong, rs[2]})
	var bad *escrow.BadShareError
	if !errors.As(err, &bad) || bad.Custodians["court-b"] == "" || len(bad.Custodians) != 1 {
		t.Fatalf("corrupted share: %v", err)
	}
	if key == nil || !bytes.Equal(key.PublicKey(), pub.PublicKey) {
		t.Fatal("recovery from the two honest custodians failed")
	}
	if _, err := escrow.Recover(agency, pub, []*escrow.Release{rs[0], wrong}); !errors.Is(err, escrow.ErrNotEnoughShares) || !strings.Contains(err.Error(), "court-b") {
		t.Fatalf("one honest share and one bad: %v", err)
	}
	if _, err := escrow.Recover(agency, pub, []*escrow.Release{rs[0], rs[0]}); err == nil || !strings.Contains(err.Error(), "two releases") {
		t.Fatalf("duplicate share: %v", err)
	}
	other := *rs[2]
	other.KeyID = "2026-12"
	if _, err := escrow.Recover(agency, pub, []*escrow.Release{rs[0], &other}); err == nil || !strings.Contains(err.Error(), "key ID") {
		t.Fatalf("other key ID: %v", err)
	}
	stranger, _ := recipient.Generate("")
	if _, err := escrow.Recover(stranger, pub, rs); !errors.Is(err, escrow.ErrNotEnoughShares) {
		t.Fatalf("another agency's identity: %v", err)
	}
}

// TestNoSecretOnDisk writes everything a ceremony outputs, recovers the
// key and the shares, and searches every file for them in any common
// encoding.
func TestNoSecretOnDisk(t *testing.T) {
	cs, pcrs := fleet(t, 3)
	pub, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, members(cs), escrow.WithMode(escrow.ModeShare))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	data, _ := pub.Marshal()
	os.WriteFile(filepath.Join(out, "escrow-2026-11.pub.json"), data, 0o644)
	var secrets [][]byte
	for i, b := range bundles {
		data, _ := b.Marshal()
		os.WriteFile(filepath.Join(out, b.CustodianID+".bundle.json"), data, 0o644)
		blob, _ := tpm.ParseBlob(b.Blob)
		share, err := tpm.Unseal(cs[i].conn, blob)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, share)
	}
	agency, _ := recipient.Generate("")
	key, err := escrow.Recover(agency, pub, []*escrow.Release{
		releaseShare(t, cs[0], bundles[0], agency.Public()), releaseShare(t, cs[1], bundles[1], agency.Public())})
	if err != nil {
		t.Fatal(err)
	}
	scalar, _ := base64.RawURLEncoding.DecodeString(key.String()[strings.LastIndexByte(key.String(), ':')+1:])
	secrets = append(secrets, scalar)
	for _, dir := range []string{out, os.TempDir()} {
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			// Other programs' files share the temporary directory, some of
			// them huge or sparse: what this test could leave is small.
			if info, err := d.Info(); err != nil || info.Size() > 16<<20 {
				return nil
			}
			content, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			for _, s := range secrets {
				for _, enc := range [][]byte{s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)),
					[]byte(base64.RawURLEncoding.EncodeToString(s))} {
					if bytes.Contains(content, enc) {
						t.Errorf("%s contains a secret", path)
					}
				}
			}
			return nil
		})
	}
}

func TestCeremonyRefusesWeakSetups(t *testing.T) {
	ms := []escrow.Member{{ID: "court-a", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}, {ID: "court-c", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}}
	good := tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}
	dupID := append([]escrow.Member{}, ms...)
	dupID[2].ID = "court-a"
	dupEK := append([]escrow.Member{}, ms...)
	dupEK[2].EK = ms[0].EK
	for name, c := range map[string]struct {
		keyID     string
		threshold int
		pcrs      tpm.PCRValues
		ms        []escrow.Member
	}{
		"threshold above n":   {"2026-11", 4, good, ms},
		"threshold 1":         {"2026-11", 1, good, ms},
		"one custodian":       {"2026-11", 2, good, ms[:1]},
		"duplicate custodian": {"2026-11", 2, good, dupID},
		"same TPM twice":      {"2026-11", 2, good, dupEK},
		"empty policy":        {"2026-11", 2, tpm.PCRValues{}, ms},
		"PCR 16 in policy":    {"2026-11", 2, tpm.PCRValues{16: good[8]}, ms},
		"bad key ID":          {"2026/11", 2, good, ms},
	} {
		if _, _, err := escrow.Ceremony(c.keyID, c.threshold, c.pcrs, c.ms); err == nil {
			t.Errorf("%s: ceremony ran", name)
		}
	}
}
