package tpm_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cloudflare/circl/group"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// scopedShare makes a share scalar, its key sealed for ek under pcrs (round
// tripped through its encoding) and its proof key K = s·B.
func scopedShare(t testing.TB, ek *tpm.ImportKey, pcrs tpm.PCRValues) ([]byte, *tpm.ScopedKey, []byte) {
	t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := priv.Bytes()
	k, err := tpm.SealScoped(ek, pcrs, testVersion, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := tpm.ParseScopedKey(k.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.Marshal(), k.Marshal()) {
		t.Fatal("a scoped key does not re-encode to the same bytes")
	}
	proofKey, err := tpm.ProofKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, parsed, proofKey
}

func randomPoint(t testing.TB) []byte {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

// mulPoint is s·R computed in software, the value a partial must equal.
func mulPoint(t testing.TB, s, r []byte) []byte {
	t.Helper()
	priv, err := ecdh.P256().NewPrivateKey(s)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ecdh.P256().NewPublicKey(r)
	if err != nil {
		t.Fatal(err)
	}
	x, err := priv.ECDH(pub)
	if err != nil {
		t.Fatal(err)
	}
	return x // the x-coordinate
}

func TestScopedPartialIsShareTimesPointAndItsProofVerifies(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		for _, kind := range []tpm.EKKind{tpm.EKRSA2048, tpm.EKECCP256} {
			t.Run(kind.String(), func(t *testing.T) {
				conn := target.Open(t)
				ek := provisionKind(t, conn, kind)
				s, key, proofKey := scopedShare(t, ek, bootedState(t, conn))
				points := [][]byte{randomPoint(t), randomPoint(t)}
				partials, err := tpm.Partials(conn, key, points, nil)
				if err != nil {
					t.Fatal(err)
				}
				for i, p := range partials {
					got, err := tpm.VerifyPartial(proofKey, points[i], &p)
					if err != nil {
						t.Fatalf("partial %d: %v", i, err)
					}
					if !bytes.Equal(got[1:33], mulPoint(t, s, points[i])) {
						t.Fatalf("partial %d is not s·R", i)
					}
					if bytes.Equal(p.Point, got) || len(p.Blind) != 32 {
						t.Fatalf("partial %d was not blinded", i)
					}
				}
				tpmtest.AssertNoLeaks(t, conn)
			})
		}
	})
}

// TestInvariantScopedShareNeverOnTPMBus: over import, ZGen and the proofs,
// no command or response holds the share scalar; every ECDH_ZGen asks the
// TPM to encrypt its response, in a session salted to the key's gate key
// (the object the ZGen key loads under); and neither the envelope's point R nor the
// partial s·R crosses the bus, so the proof's values (sent in the clear)
// cannot be turned into the partial: the TPM only sees a blinded point.
func TestInvariantScopedShareNeverOnTPMBus(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s, key, proofKey := scopedShare(t, ek, pcrs)
		bus := &tpmtest.Recorder{TPM: conn}
		r := randomPoint(t)
		partials, err := tpm.Partials(bus, key, [][]byte{r}, nil)
		if err != nil {
			t.Fatal(err)
		}
		partial, err := tpm.VerifyPartial(proofKey, r, &partials[0])
		if err != nil {
			t.Fatal(err)
		}
		if bus.Seen(s) {
			t.Fatal("the share scalar crossed the TPM bus")
		}
		if n, clear := bus.EncryptedResponses(tpm2.TPMCCECDHZGen, 1); n != 1 || clear != 0 {
			t.Errorf("saw %d ECDH_ZGen commands, %d without response encryption; want 1 and 0", n, clear)
		}
		if bus.Seen(r[1:33]) || bus.Seen(partial[1:33]) {
			t.Error("the envelope's point or its partial crossed the bus: the proof's values would give the partial away")
		}
		requireSaltedToGateKey(t, bus, key, tpm2.TPMCCECDHZGen, 1)
	})
}

// requireSaltedToGateKey: every command with code cc on the recorded bus
// ran in a started session whose salt was encrypted to a transient handle
// that a recorded TPM2_Load gave k's gate key's Name (computed from the
// scoped key, not read back).
func requireSaltedToGateKey(t *testing.T, bus *tpmtest.Recorder, k *tpm.ScopedKey, cc tpm2.TPMCC, handles int) {
	t.Helper()
	commands := bus.CommandSessions(cc, handles)
	if len(commands) == 0 {
		t.Fatalf("no command %#x was recorded", uint32(cc))
	}
	want := tpm.GateKeyName(k)
	for i, sessions := range commands {
		salted := false
		for _, s := range sessions {
			salted = salted || bytes.Equal(s.TPMKeyName, want) && len(s.EncryptedSalt) > 0
		}
		if !salted {
			t.Errorf("command %#x (#%d) ran in %d started session(s), none salted to the gate key: an eavesdropper derives the session key",
				uint32(cc), i, len(sessions))
		}
	}
}

// TestWrongPartialIsCaughtByItsProof: a partial that is not s·R does not
// verify, whether it was altered, made with another share, or proved for
// another point; and each equation of the proof is needed: a custodian
// that knows its share can make the key equation hold for a wrong point,
// and anyone can make the point equation hold for a scalar that is not
// the share. Each case says which equations fail, and the refusal names
// the first of them.
func TestWrongPartialIsCaughtByItsProof(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		share, key, proofKey := scopedShare(t, ek, pcrs)
		_, other, otherProofKey := scopedShare(t, ek, pcrs)
		r, r2 := randomPoint(t), randomPoint(t)
		got, err := tpm.Partials(conn, key, [][]byte{r, r2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := tpm.Partials(conn, other, [][]byte{r}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tpm.VerifyPartial(otherProofKey, r, &theirs[0]); err != nil {
			t.Fatalf("the other share's own partial: %v", err)
		}
		badS := got[0]
		badS.S = bytes.Clone(badS.S)
		badS.S[31] ^= 1
		const keyEq, pointEq = "S·B ≠ L + c·K", "S·R ≠ E + c·P"
		cases := map[string]struct {
			r         []byte
			p         *tpm.Partial
			keyHolds  bool
			pointHold bool
			named     string
		}{
			"a bit flipped in S":                    {r, &badS, false, false, keyEq},
			"another share's partial":               {r, &theirs[0], false, false, keyEq},
			"the proof of another point":            {r, &got[1], false, false, keyEq},
			"a wrong point proved with the share":   {r, forgedPartial(t, share, proofKey, r, true), true, false, pointEq},
			"the right relation for another scalar": {r, forgedPartial(t, share, proofKey, r, false), false, true, keyEq},
		}
		for name, c := range cases {
			keyHolds, pointHolds, err := tpm.ProofEquations(proofKey, c.r, c.p)
			if err != nil || keyHolds != c.keyHolds || pointHolds != c.pointHold {
				t.Errorf("%s: key equation holds %v, point equation %v (%v); want %v, %v", name, keyHolds, pointHolds, err, c.keyHolds, c.pointHold)
			}
			if _, err := tpm.VerifyPartial(proofKey, c.r, c.p); !errors.Is(err, tpm.ErrBadProof) || !strings.Contains(err.Error(), c.named) {
				t.Errorf("%s: got %v, want ErrBadProof naming %s", name, err, c.named)
			}
		}
		flipped := got[0]
		flipped.Point = bytes.Clone(flipped.Point)
		flipped.Point[40] ^= 1
		if _, err := tpm.VerifyPartial(proofKey, r, &flipped); !errors.Is(err, tpm.ErrBadProof) {
			t.Errorf("a bit flipped in the point: got %v, want ErrBadProof", err)
		}
	})
}

// forgedPartial makes a proof for R in which exactly one equation holds.
// With keyEq, it is what a custodian knowing its share s could send: L =
// k·B, S = k + c·s, and a point that is not s·R. Without, S = k + c·x for
// some x that is not the share, with E = k·R and P = x·R.
func forgedPartial(t *testing.T, share, proofKey, r []byte, keyEq bool) *tpm.Partial {
	t.Helper()
	g := group.P256
	scalar := func(b []byte) group.Scalar {
		s := g.NewScalar()
		if err := s.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		return s
	}
	element := func(b []byte) group.Element {
		e := g.NewElement()
		if err := e.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		return e
	}
	encode := func(e group.Element) []byte {
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	B, R := element(tpm.ProofBase()), element(r)
	k := g.RandomNonZeroScalar(rand.Reader)
	x := scalar(share)
	var p tpm.Partial
	if keyEq {
		p.L, p.E, p.Point = encode(g.NewElement().Mul(B, k)), randomPoint(t), randomPoint(t)
	} else {
		x = g.RandomNonZeroScalar(rand.Reader)
		p.L, p.E, p.Point = randomPoint(t), encode(g.NewElement().Mul(R, k)), encode(g.NewElement().Mul(R, x))
	}
	p.NonceK = make([]byte, 32)
	rand.Read(p.NonceK)
	c := scalar(tpm.ProofChallenge(p.NonceK, proofKey, r, p.Point, p.E, p.L))
	S := g.NewScalar().Add(k, g.NewScalar().Mul(c, x))
	var err error
	if p.S, err = S.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestInvariantScopedKeyWorksOnlyUnderItsPolicy: after a PCR extend the
// TPM refuses ZGen; a password cannot authorize either object; neither can
// be duplicated, even in a session that satisfies its PCR policy.
func TestInvariantScopedKeyWorksOnlyUnderItsPolicy(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		_, key, _ := scopedShare(t, ek, pcrs)
		r := randomPoint(t)
		for _, twin := range []bool{false, true} {
			obj, err := tpm.LoadScopedObject(conn, key, twin)
			if err != nil {
				t.Fatal(err)
			}
			handle := func(auth tpm2.Session) tpm2.AuthHandle {
				return tpm2.AuthHandle{Handle: obj.ObjectHandle, Name: obj.Name, Auth: auth}
			}
			_, err = tpm2.ECDHZGen{KeyHandle: handle(tpm2.PasswordAuth(nil)), InPoint: tpm2.New2B(ecPoint(r))}.Execute(conn)
			if !errors.Is(err, tpm2.TPMRCAuthUnavailable) {
				t.Errorf("twin=%v: ECDH_ZGen with a password: got %v, want TPM_RC_AUTH_UNAVAILABLE", twin, err)
			}
			if err := duplicateUnderPolicy(conn, handle, pcrs); !errors.Is(err, tpm2.TPMRCPolicyFail) {
				t.Errorf("twin=%v: TPM2_Duplicate: got %v, want TPM_RC_POLICY_FAIL", twin, err)
			}
			flushHandle(conn, obj.ObjectHandle)
		}
		measure(t, conn, 9, "an unapproved binary")
		if _, err := tpm.Partials(conn, key, [][]byte{r}, nil); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("ZGen after a PCR extend: got %v, want ErrPCRMismatch", err)
		}
		tpmtest.AssertNoLeaks(t, conn)
	})
}

// duplicateUnderPolicy tries TPM2_Duplicate in a session holding the
// object's PCR policy and the Duplicate command code.
func duplicateUnderPolicy(conn transport.TPM, handle func(tpm2.Session) tpm2.AuthHandle, pcrs tpm.PCRValues) error {
	sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return err
	}
	defer closeSession()
	if err := tpm.PolicyPCRCommand(conn, sess, pcrs, testVersion, tpm2.TPMCCDuplicate); err != nil {
		return err
	}
	_, err = tpm2.Duplicate{
		ObjectHandle:    handle(sess),
		NewParentHandle: tpm2.TPMRHNull,
		Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
	}.Execute(conn)
	return err
}

func ecPoint(p []byte) tpm2.TPMSECCPoint {
	return tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: p[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: p[33:]}}
}

func flushHandle(conn transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(conn)
}

// TestScopedKeyFollowsAnApprovedImage: a key that names an approver works
// under its own PCRs, and after the PCRs change only with the approver's
// signature of the new values, checked by the TPM.
func TestScopedKeyFollowsAnApprovedImage(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		approver, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		impostor, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		s, _, proofKey := scopedShare(t, ek, pcrs)
		sealed, err := tpm.SealScoped(ek, pcrs, testVersion, s, &approver.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		key, err := tpm.ParseScopedKey(sealed.Marshal())
		if err != nil || !key.Approver.Equal(&approver.PublicKey) {
			t.Fatalf("re-parsed approver: %v", err)
		}
		r := randomPoint(t)
		partial := func(a *tpm.Approval) error {
			got, err := tpm.Partials(conn, key, [][]byte{r}, a)
			if err != nil {
				return err
			}
			_, err = tpm.VerifyPartial(proofKey, r, &got[0])
			return err
		}
		if err := partial(nil); err != nil {
			t.Fatalf("under its own PCRs: %v", err)
		}
		measure(t, conn, 9, "custodian v2")
		now, err := tpm.ReadPCRs(conn, 8, 9)
		if err != nil {
			t.Fatal(err)
		}
		if err := partial(nil); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("new image, no approval: %v", err)
		}
		if err := partial(approve(t, impostor, now)); !errors.Is(err, tpm.ErrBadApproval) {
			t.Fatalf("approval by another key: %v", err)
		}
		if err := partial(approve(t, approver, pcrs)); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("approval of the old PCRs on the new image: %v", err)
		}
		if err := partial(approve(t, approver, now)); err != nil {
			t.Fatalf("approved new image: %v", err)
		}
		tpmtest.AssertNoLeaks(t, conn)
	})
}

func approve(t testing.TB, key *ecdsa.PrivateKey, pcrs tpm.PCRValues) *tpm.Approval {
	t.Helper()
	return approveAt(t, key, pcrs, testVersion)
}

// TestInvariantGateKeyOnlyLoads: the gate key's policy names no command,
// so it must not give the ADMIN or DUP role: on the approved image, in a
// session that satisfies its policy exactly (and in one that adds the
// command's code), TPM2_Duplicate, which would carry it and so its
// children off the TPM, and TPM2_ObjectChangeAuth are refused. The TPM
// requires PolicyCommandCode of the command for those roles.
func TestInvariantGateKeyOnlyLoads(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		_, key, _ := scopedShare(t, ek, pcrs)
		gateKey, err := tpm.LoadGateKey(conn, key)
		if err != nil {
			t.Fatal(err)
		}
		defer flushHandle(conn, gateKey.ObjectHandle)
		handle := func(auth tpm2.Session) tpm2.AuthHandle {
			return tpm2.AuthHandle{Handle: gateKey.ObjectHandle, Name: gateKey.Name, Auth: auth}
		}
		sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
		if err != nil {
			t.Fatal(err)
		}
		defer closeSession()
		attempts := map[string]func() error{
			"TPM2_Duplicate": func() error {
				_, err := tpm2.Duplicate{ObjectHandle: handle(sess), NewParentHandle: tpm2.TPMRHNull,
					Symmetric: tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull}}.Execute(conn)
				return err
			},
			"TPM2_ObjectChangeAuth": func() error {
				_, err := tpm2.ObjectChangeAuth{ObjectHandle: handle(sess),
					ParentHandle: tpm2.NamedHandle{Handle: tpm.ImportKeyHandle(ek), Name: tpm2.TPM2BName{Buffer: ek.Name()}},
					NewAuth:      tpm2.TPM2BAuth{Buffer: []byte("chosen")}}.Execute(conn)
				return err
			},
		}
		for name, attempt := range attempts {
			if err := tpm.PassImage(conn, sess, pcrs, testVersion); err != nil {
				t.Fatal(err)
			}
			if err := attempt(); !errors.Is(err, tpm2.TPMRCPolicyFail) {
				t.Errorf("%s under the gate key's own policy: got %v, want TPM_RC_POLICY_FAIL", name, err)
			}
		}
		if err := duplicateUnderPolicy(conn, handle, pcrs); !errors.Is(err, tpm2.TPMRCPolicyFail) {
			t.Errorf("TPM2_Duplicate with its command code: got %v, want TPM_RC_POLICY_FAIL", err)
		}
	})
}

// TestKeptPartsSurviveAFullTPM: a call that finds the TPM's object slots
// taken fails with that cause and forgets nothing: it imports nothing,
// and once the slots are free the next call loads the kept parts again.
func TestKeptPartsSurviveAFullTPM(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		_, key, _ := scopedShare(t, ek, pcrs)
		_, other, _ := scopedShare(t, ek, pcrs)
		if _, err := tpm.PartialsBatch(conn, key, randomPoints(t, 1), nil, nil); err != nil {
			t.Fatal(err)
		}
		var held []tpm2.TPMHandle
		for range 2 {
			g, err := tpm.LoadGateKey(conn, other)
			if err != nil {
				break
			}
			held = append(held, g.ObjectHandle)
		}
		bus := &tpmtest.Recorder{TPM: conn}
		_, err := tpm.PartialsBatch(bus, key, randomPoints(t, 1), nil, nil)
		if !errors.Is(err, tpm2.TPMRCObjectMemory) {
			t.Errorf("with %d object slots held: %v, want TPM_RC_OBJECT_MEMORY", len(held), err)
		}
		if n := commandCounts(bus)[tpm2.TPMCCImport]; n != 0 {
			t.Errorf("a full TPM made the call import %d objects again", n)
		}
		for _, h := range held {
			flushHandle(conn, h)
		}
		bus.Reset()
		if _, err := tpm.PartialsBatch(bus, key, randomPoints(t, 1), nil, nil); err != nil {
			t.Fatal(err)
		}
		if n := commandCounts(bus)[tpm2.TPMCCImport]; n != 0 {
			t.Errorf("the kept parts were forgotten: the next call imported %d objects", n)
		}
	})
}

// TestParsedScopedKeysAreIndependentCopies: ParseScopedKey remembers what
// it checked, by the encoding's hash. Each caller still gets its own key
// (changing one's PCRs changes no other's), a key no longer depends on
// the caller's buffer, and bytes edited after a good parse are refused.
func TestParsedScopedKeysAreIndependentCopies(t *testing.T) {
	ek := tpmtest.RandomImportKey(t)
	pcrs := tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := tpm.SealScoped(ek, pcrs, testVersion, priv.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := k.Marshal()
	buf := bytes.Clone(data)
	first, err := tpm.ParseScopedKey(buf)
	if err != nil {
		t.Fatal(err)
	}
	clear(buf)
	// The first caller's key, then a key from the memory, are changed.
	for _, k := range []*tpm.ScopedKey{first, nil} {
		if k == nil {
			if k, err = tpm.ParseScopedKey(data); err != nil {
				t.Fatal(err)
			}
		}
		k.PCRs[8][0] = 2
		k.PCRs[9] = make([]byte, 32)
		// The import key, which every copy shares, through what it gives.
		switch key := k.Key.PublicKey().(type) {
		case *rsa.PublicKey:
			key.E = 3
		case *ecdsa.PublicKey:
			key.X.SetInt64(1)
		}
		public := k.Key.Public()
		if modulus, err := public.Unique.RSA(); err == nil {
			modulus.Buffer[0] ^= 0xff
		} else if point, err := public.Unique.ECC(); err == nil {
			point.X.Buffer[0] ^= 0xff
		}
	}
	third, err := tpm.ParseScopedKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if !third.PCRs.Equal(pcrs) || !bytes.Equal(third.Marshal(), data) {
		t.Fatal("a parsed scoped key changed with another caller's copy or with the caller's buffer")
	}
	if der, err := x509.MarshalPKIXPublicKey(third.Key.PublicKey()); err != nil || !bytes.Equal(der, ek.MarshalPKIX()) {
		t.Fatalf("the import key changed with another caller's copy (%v)", err)
	}
	if !bytes.Equal(tpm2.Marshal(third.Key.Public()), tpm2.Marshal(ek.Public())) {
		t.Fatal("the import key's public area changed with another caller's copy")
	}
	for what, edited := range map[string][]byte{
		"magic":     append([]byte("X"), data[1:]...),
		"version":   append(append(bytes.Clone(data[:8]), 3), data[9:]...),
		"truncated": data[:len(data)-1],
		"trailing":  append(bytes.Clone(data), 0),
	} {
		if _, err := tpm.ParseScopedKey(edited); !errors.Is(err, tpm.ErrMalformedBlob) {
			t.Errorf("%s, after a good parse: %v, want ErrMalformedBlob", what, err)
		}
	}
}

// TestInvariantSwappedSaltKeyStopsBeforeZGen: the ZGen session is salted
// to the gate key by its handle. An interposer on the bus that points
// that handle at a P-256 key of its own could derive the TPM's session
// key (an ECC salt is an ECDH with the device's ephemeral point); but
// then the TPM's key is not the device's, so the first command the
// session authorizes (the ZGen key's import, or its load once imported)
// fails its HMAC and the call ends there: no ECDH_ZGen is ever sent.
func TestInvariantSwappedSaltKeyStopsBeforeZGen(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		_, fresh, _ := scopedShare(t, ek, pcrs)
		_, imported, _ := scopedShare(t, ek, pcrs)
		if _, err := tpm.PartialsBatch(conn, imported, [][]byte{randomPoint(t)}, nil, nil); err != nil {
			t.Fatal(err)
		}
		own, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHNull, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
		}.Execute(conn)
		if err != nil {
			t.Fatal(err)
		}
		bus := &tpmtest.Recorder{TPM: conn}
		swap := &saltSwapper{TPM: bus, to: own.ObjectHandle}
		for what, key := range map[string]*tpm.ScopedKey{"importing": fresh, "loading": imported} {
			if _, err := tpm.PartialsBatch(swap, key, [][]byte{randomPoint(t)}, nil, nil); err == nil {
				t.Fatalf("%s: partials computed in a session salted to another key", what)
			}
		}
		if swap.swapped != 2 {
			t.Fatalf("swapped %d salt keys, want 2", swap.swapped)
		}
		if n, _ := bus.EncryptedResponses(tpm2.TPMCCECDHZGen, 1); n != 0 {
			t.Fatalf("%d ECDH_ZGen commands were sent in a session salted to another key", n)
		}
		tpmtest.FlushAll(t, conn)
	})
}

// saltSwapper points every salt encrypted to a transient key at another
// transient key.
type saltSwapper struct {
	TPM     transport.TPM
	to      tpm2.TPMHandle
	swapped int
}

func (s *saltSwapper) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 14 && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) == tpm2.TPMCCStartAuthSession &&
		binary.BigEndian.Uint32(cmd[10:14])>>24 == 0x80 {
		cmd = bytes.Clone(cmd)
		binary.BigEndian.PutUint32(cmd[10:14], uint32(s.to))
		s.swapped++
	}
	return s.TPM.Send(cmd)
}
