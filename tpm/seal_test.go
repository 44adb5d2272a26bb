package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// measure extends PCR i with the SHA-256 of data, as the early init does.
func measure(t testing.TB, conn transport.TPM, i int, data string) {
	t.Helper()
	d := sha256.Sum256([]byte(data))
	if err := tpm.ExtendPCR(conn, i, d[:]); err != nil {
		t.Fatal(err)
	}
}

// testVersion is the security version tests seal at when the floor is
// not what they test: above any floor a test TPM starts at.
const testVersion = 32

// bootedState defines the version floor, measures a boot into PCRs 8 and
// 9 and returns their values.
func bootedState(t testing.TB, conn transport.TPM) tpm.PCRValues {
	t.Helper()
	if floor := tpmtest.Floor(t, conn); floor > testVersion {
		t.Fatalf("the test TPM's floor is %d, above the tests' version %d", floor, testVersion)
	}
	measure(t, conn, 8, "root filesystem")
	measure(t, conn, 9, "custodian binary")
	pcrs, err := tpm.ReadPCRs(conn, 8, 9)
	if err != nil {
		t.Fatal(err)
	}
	return pcrs
}

// bootedDevice gives the TPM its RSA EK and import key, as enrollment
// does, and measures a boot. It returns the import key.
func bootedDevice(t testing.TB, conn transport.TPM) (*tpm.ImportKey, tpm.PCRValues) {
	t.Helper()
	if _, err := tpm.ProvisionEK(conn, tpm.EKRSA2048); err != nil {
		t.Fatal(err)
	}
	key, err := tpm.ProvisionImportKey(conn, tpm.EKRSA2048)
	if err != nil {
		t.Fatal(err)
	}
	return key, bootedState(t, conn)
}

// provisionKind gives the TPM its EK and import key of kind, and returns
// the import key.
func provisionKind(t testing.TB, conn transport.TPM, kind tpm.EKKind) *tpm.ImportKey {
	t.Helper()
	if _, err := tpm.ProvisionEK(conn, kind); err != nil {
		t.Fatal(err)
	}
	key, err := tpm.ProvisionImportKey(conn, kind)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func secret(t testing.TB) []byte {
	t.Helper()
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// sealAndReparse seals to ek and round-trips the blob through its encoding,
// as a blob travels from the ceremony to the device.
func sealAndReparse(t testing.TB, ek *tpm.ImportKey, pcrs tpm.PCRValues, s []byte) *tpm.Blob {
	t.Helper()
	blob, err := tpm.Seal(ek, pcrs, testVersion, s)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := tpm.ParseBlob(blob.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func TestSealUnsealRoundTrip(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		for _, kind := range []tpm.EKKind{tpm.EKRSA2048, tpm.EKECCP256} {
			t.Run(kind.String(), func(t *testing.T) {
				conn := target.Open(t)
				ek := provisionKind(t, conn, kind)
				pcrs := bootedState(t, conn)
				s := secret(t)
				got, err := tpm.Unseal(conn, sealAndReparse(t, ek, pcrs, s))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, s) {
					t.Fatal("unsealed secret differs from the sealed one")
				}
			})
		}
	})
}

// TestInvariantNoPlaintextShareOnTPMBus records every command and response
// of an import and unseal and searches them for the secret.
func TestInvariantNoPlaintextShareOnTPMBus(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s := secret(t)
		blob := sealAndReparse(t, ek, pcrs, s)

		bus := &tpmtest.Recorder{TPM: conn}
		got, err := tpm.Unseal(bus, blob)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, s) {
			t.Fatal("unsealed secret differs from the sealed one")
		}
		if bus.Seen(s) {
			t.Fatal("the secret crossed the TPM bus in the clear")
		}
		// StartAuthSession, PolicyCommandCode·PolicyOR·Import,
		// PolicyCommandCode·PolicyOR·Load, PolicyPCR·PolicyNV·Unseal,
		// two flushes.
		if n := bus.Count(); n != 12 {
			t.Errorf("import+unseal took %d TPM commands, want 12", n)
		}
		requireSaltedToImportKey(t, bus, ek, tpm2.TPMCCImport, 1)
		requireSaltedToImportKey(t, bus, ek, tpm2.TPMCCUnseal, 1)
	})
}

// requireSaltedToImportKey: every command with code cc on the recorded bus ran
// in a started session whose salt was encrypted to the import key. Response
// encryption alone is not enough: an unsalted, unbound session's key is
// empty, so its encryption key comes from the two nonces, which cross the
// bus, and a probe decrypts the response.
func requireSaltedToImportKey(t *testing.T, bus *tpmtest.Recorder, ek *tpm.ImportKey, cc tpm2.TPMCC, handles int) {
	t.Helper()
	commands := bus.CommandSessions(cc, handles)
	if len(commands) == 0 {
		t.Fatalf("no command %#x was recorded", uint32(cc))
	}
	for i, sessions := range commands {
		salted := false
		for _, s := range sessions {
			salted = salted || s.TPMKey == tpm.ImportKeyHandle(ek) && len(s.EncryptedSalt) > 0
		}
		if !salted {
			t.Errorf("command %#x (#%d) ran in %d started session(s), none salted to the import key (%#x): an eavesdropper derives the session key",
				uint32(cc), i, len(sessions), uint32(tpm.ImportKeyHandle(ek)))
		}
	}
}

func TestInvariantSealingRefusesPoliciesThatProtectNothing(t *testing.T) {
	ek := tpmtest.RandomImportKey(t)
	good := make([]byte, 32)
	good[0] = 1
	cases := map[string]struct {
		pcrs tpm.PCRValues
		want error
	}{
		"empty selection": {tpm.PCRValues{}, tpm.ErrEmptySelection},
		"nil selection":   {nil, tpm.ErrEmptySelection},
		"all-zero value":  {tpm.PCRValues{8: good, 9: make([]byte, 32)}, tpm.ErrUnextendedPCR},
		"PCR 16":          {tpm.PCRValues{8: good, 16: good}, tpm.ErrResettablePCR},
		"PCR 23":          {tpm.PCRValues{23: good}, tpm.ErrResettablePCR},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := tpm.Seal(ek, c.pcrs, 1, []byte("share"))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	for name, pcrs := range map[string]tpm.PCRValues{
		"PCR 24":         {24: good},
		"short value":    {8: good[:20]},
		"negative index": {-1: good},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := tpm.Seal(ek, pcrs, 1, []byte("share")); err == nil {
				t.Fatal("sealed to an invalid PCR selection")
			}
		})
	}
	for name, s := range map[string][]byte{"empty secret": nil, "oversize secret": make([]byte, tpm.MaxSecret+1)} {
		t.Run(name, func(t *testing.T) {
			if _, err := tpm.Seal(ek, tpm.PCRValues{8: good}, 1, s); err == nil {
				t.Fatal("sealed an out-of-range secret")
			}
		})
	}
}

func TestNewEKRefusesNonTemplateKeys(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, pub := range map[string]any{
		"RSA-1024":  &small.PublicKey,
		"P-384":     &p384.PublicKey,
		"not a key": "hello",
	} {
		if _, err := tpm.NewEK(pub); err == nil {
			t.Errorf("%s: accepted as an endorsement key", name)
		}
	}
}

func TestUnsealRefuses(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)

		t.Run("wrong EK", func(t *testing.T) {
			_, err := tpm.Unseal(conn, sealAndReparse(t, tpmtest.RandomImportKey(t), pcrs, secret(t)))
			if !errors.Is(err, tpm.ErrWrongKey) {
				t.Fatalf("got %v, want ErrWrongKey", err)
			}
		})
		t.Run("wrong PCR values", func(t *testing.T) {
			other := pcrs.Extend(9, make([]byte, 32))
			_, err := tpm.Unseal(conn, sealAndReparse(t, ek, other, secret(t)))
			if !errors.Is(err, tpm.ErrPCRMismatch) {
				t.Fatalf("got %v, want ErrPCRMismatch", err)
			}
		})
		t.Run("garbled duplicate", func(t *testing.T) {
			data := sealAndReparse(t, ek, pcrs, secret(t)).Marshal()
			data[len(data)-300] ^= 0x01 // inside the duplicate or seed
			blob, err := tpm.ParseBlob(data)
			if err != nil {
				t.Fatalf("a bit flip in the ciphertext should parse and fail in the TPM: %v", err)
			}
			_, err = tpm.Unseal(conn, blob)
			if !errors.Is(err, tpm.ErrCorruptBlob) {
				t.Fatalf("got %v, want ErrCorruptBlob", err)
			}
		})
		t.Run("second open after extend", func(t *testing.T) {
			s := secret(t)
			blob := sealAndReparse(t, ek, pcrs, s)
			if _, err := tpm.Unseal(conn, blob); err != nil {
				t.Fatal(err)
			}
			measure(t, conn, 9, "something else ran")
			_, err := tpm.Unseal(conn, blob)
			if !errors.Is(err, tpm.ErrPCRMismatch) {
				t.Fatalf("got %v, want ErrPCRMismatch", err)
			}
		})
	})
}

func TestParseBlobRefusesDamage(t *testing.T) {
	good := make([]byte, 32)
	good[0] = 7
	blob, err := tpm.Seal(tpmtest.RandomImportKey(t), tpm.PCRValues{8: good}, 1, []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	data := blob.Marshal()
	if _, err := tpm.ParseBlob(data); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(data); n++ {
		if _, err := tpm.ParseBlob(data[:n]); !errors.Is(err, tpm.ErrMalformedBlob) {
			t.Fatalf("truncated to %d bytes: got %v, want ErrMalformedBlob", n, err)
		}
	}
	if _, err := tpm.ParseBlob(append(bytes.Clone(data), 0)); !errors.Is(err, tpm.ErrMalformedBlob) {
		t.Fatalf("trailing byte: got %v", err)
	}
	bad := bytes.Clone(data)
	bad[0] ^= 0xff
	if _, err := tpm.ParseBlob(bad); !errors.Is(err, tpm.ErrMalformedBlob) {
		t.Fatalf("bad magic: got %v", err)
	}
}

// TestParsedBlobsAreIndependentCopies: ParseBlob remembers what it
// checked, by the encoding's hash (a device parses the same bundle's blob
// at every release). Each caller still gets its own blob (changing one's
// PCRs or version changes no other's), a blob no longer depends on the
// caller's buffer, the next parse gives the blob of its own bytes, and
// bytes edited after a good parse are refused.
func TestParsedBlobsAreIndependentCopies(t *testing.T) {
	ek := tpmtest.RandomImportKey(t)
	pcrs := tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}
	blob, err := tpm.Seal(ek, pcrs, testVersion, []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	data := blob.Marshal()
	buf := bytes.Clone(data)
	first, err := tpm.ParseBlob(buf)
	if err != nil {
		t.Fatal(err)
	}
	clear(buf)
	// The first caller's blob, then one from the memory, are changed.
	for _, b := range []*tpm.Blob{first, nil} {
		if b == nil {
			if b, err = tpm.ParseBlob(data); err != nil {
				t.Fatal(err)
			}
		}
		b.PCRs[8][0] = 2
		b.PCRs[9] = make([]byte, 32)
		b.Version++
		switch key := b.Key.PublicKey().(type) {
		case *rsa.PublicKey:
			key.E = 3
		case *ecdsa.PublicKey:
			key.X.SetInt64(1)
		}
	}
	third, err := tpm.ParseBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	if !third.PCRs.Equal(pcrs) || third.Version != testVersion || !bytes.Equal(third.Marshal(), data) {
		t.Fatal("a parsed blob changed with another caller's copy or with the caller's buffer")
	}
	if !bytes.Equal(third.Key.MarshalPKIX(), ek.MarshalPKIX()) {
		t.Fatal("the import key changed with another caller's copy")
	}
	// Other bytes, other blob: sealed at another version.
	other, err := tpm.Seal(ek, pcrs, testVersion-1, []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tpm.ParseBlob(other.Marshal()); err != nil || got.Version != testVersion-1 {
		t.Fatalf("another blob after a good parse: version %v, %v", got, err)
	}
	for what, edited := range map[string][]byte{
		"magic":     append([]byte("X"), data[1:]...),
		"truncated": data[:len(data)-1],
		"trailing":  append(bytes.Clone(data), 0),
	} {
		if _, err := tpm.ParseBlob(edited); !errors.Is(err, tpm.ErrMalformedBlob) {
			t.Errorf("%s, after a good parse: %v, want ErrMalformedBlob", what, err)
		}
	}
}

func FuzzParseBlob(f *testing.F) {
	good := make([]byte, 32)
	good[0] = 7
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ek, _ := tpm.NewImportKey(&key.PublicKey)
	blob, err := tpm.Seal(ek, tpm.PCRValues{8: good, 9: good}, 1, []byte("share"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob.Marshal())
	f.Add([]byte("CUSTSEAL\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := tpm.ParseBlob(data)
		if err != nil {
			return
		}
		// One canonical form: whatever parses re-encodes to the same bytes.
		if !bytes.Equal(b.Marshal(), data) {
			t.Fatal("a parsed blob re-encodes differently")
		}
	})
}
