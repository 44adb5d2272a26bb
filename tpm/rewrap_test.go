package tpm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// rewrapToNull sends TPM2_Rewrap(oldParent, TPM_RH_NULL, dup, name, seed)
// by hand (go-tpm has no struct for it) with one authorization for
// oldParent: the policy session sess, or the empty password when sess is
// 0. With TPM_RH_NULL as the new parent the TPM removes the outer wrapper
// and returns what is inside: for a duplicate without an inner wrapper,
// the object's sensitive area in the clear.
func rewrapToNull(conn transport.TPM, oldParent, sess tpm2.TPMHandle, dup, name, seed []byte) ([]byte, error) {
	if sess == 0 {
		sess = tpm2.TPMRSPW
	}
	b2 := func(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...) }
	var params []byte
	params = append(params, b2(dup)...)
	params = append(params, b2(name)...)
	params = append(params, b2(seed)...)
	auth := binary.BigEndian.AppendUint32(nil, uint32(sess))
	auth = append(auth, 0, 0) // nonceCaller
	auth = append(auth, 1)    // continueSession
	auth = append(auth, 0, 0) // hmac / password: empty
	cmd := binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTSessions))
	cmd = binary.BigEndian.AppendUint32(cmd, 0) // size, below
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMCCRewrap))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(oldParent))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(tpm2.TPMRHNull))
	cmd = binary.BigEndian.AppendUint32(cmd, uint32(len(auth)))
	cmd = append(cmd, auth...)
	cmd = append(cmd, params...)
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
	rsp, err := conn.Send(cmd)
	if err != nil {
		return nil, err
	}
	if len(rsp) < 10 {
		return nil, errors.New("short response")
	}
	if rc := binary.BigEndian.Uint32(rsp[6:10]); rc != 0 {
		return nil, fmt.Errorf("TPM2_Rewrap: rc 0x%x", rc)
	}
	// tag, size, rc, parameterSize, then outDuplicate (TPM2B_PRIVATE).
	p := rsp[14:]
	n := int(binary.BigEndian.Uint16(p))
	return bytes.Clone(p[2 : 2+n]), nil
}

// endorsementSession starts a policy session and satisfies the EK's
// policy, PolicySecret(endorsement), in it: what any software on the
// device can do while the endorsement hierarchy's authorization is empty
// (as on the appliance), whatever the PCRs hold.
func endorsementSession(t *testing.T, conn transport.TPM) (tpm2.Session, func() error) {
	t.Helper()
	sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
	}).Execute(conn); err != nil {
		closeSession()
		t.Fatal(err)
	}
	return sess, closeSession
}

// anotherImage extends PCR 8 as a different root filesystem would: the
// sealed objects' PCR policies no longer hold.
func anotherImage(t *testing.T, conn transport.TPM) {
	measure(t, conn, 8, "an attacker's root filesystem")
}

func ptr[T any](v T) *T { return &v }

// rewrapTries sends TPM2_Rewrap(oldParent → TPM_RH_NULL) of a duplicate
// with every authorization software on the device can bring: the EK's
// PolicySecret(endorsement) (empty endorsement authorization), the empty
// password, and the import key's policy passed for Import and tried for
// Rewrap. It fails the test if any returns what was sealed.
func rewrapTries(t *testing.T, conn transport.TPM, oldParent tpm2.TPMHandle, pub tpm2.TPMTPublic, dup, seed, secret []byte) {
	t.Helper()
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	tries := map[string]tpm2.TPMHandle{"the empty password": 0}
	endorsement, closeEndorsement := endorsementSession(t, conn)
	defer closeEndorsement()
	tries["PolicySecret(endorsement)"] = endorsement.Handle()
	for _, cc := range []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCRewrap} {
		sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
		if err != nil {
			t.Fatal(err)
		}
		defer closeSession()
		_ = tpm.PassImportPolicy(conn, sess, cc) // refused for Rewrap
		tries[fmt.Sprintf("the import key's policy for command %#x", uint32(cc))] = sess.Handle()
	}
	for what, h := range tries {
		out, err := rewrapToNull(conn, oldParent, h, dup, name.Buffer, seed)
		if err == nil {
			t.Errorf("TPM2_Rewrap to TPM_RH_NULL with %s succeeded", what)
		}
		if len(secret) > 0 && bytes.Contains(out, secret) {
			t.Errorf("the secret came out through TPM2_Rewrap with %s, in an image its policy refuses", what)
		}
	}
}

// TestInvariantBundleDoesNotLeaveThroughRewrap: a share-mode blob does
// not leave the TPM through TPM2_Rewrap of its outer wrapper, in an image
// its PCR policy refuses, whatever authorization the caller brings. (Blobs
// once wrapped for the EK did: the EK's PolicySecret(endorsement) with the
// empty endorsement authorization authorizes Rewrap.)
func TestInvariantBundleDoesNotLeaveThroughRewrap(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		key, pcrs := bootedDevice(t, conn)
		s := secret(t)
		blob := sealAndReparse(t, key, pcrs, s)
		anotherImage(t, conn)
		if _, err := tpm.Unseal(conn, blob); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("unseal in another image: %v, want the PCR mismatch", err)
		}
		pub, dup, seed := tpm.WrappedOf(blob)
		rewrapTries(t, conn, tpm.ImportKeyHandle(key), pub, dup, seed, s)
	})
}

// TestInvariantScopedShareDoesNotLeaveThroughRewrap: a scoped key's gate
// key does not leave through TPM2_Rewrap under the import key (in any
// image), and its ZGen object does not leave through TPM2_Rewrap under the
// loaded gate key even on the approved image, where the gate opens: the
// gate key's policy names only Import and Load. Scoped mode's promise (the
// share never leaves the TPM, only partials of named envelopes do) holds.
func TestInvariantScopedShareDoesNotLeaveThroughRewrap(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		key, pcrs := bootedDevice(t, conn)
		s, scoped, _ := scopedShare(t, key, pcrs)
		gatePub, gateDup, gateSeed, zgenPub, zgenDup, zgenSeed := tpm.ScopedWrapped(scoped)

		gateKey, err := tpm.LoadGateKey(conn, scoped)
		if err != nil {
			t.Fatal(err)
		}
		defer flushHandle(conn, gateKey.ObjectHandle)
		zgenName, _ := tpm2.ObjectName(&zgenPub)
		for _, cc := range []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCRewrap} {
			sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
			if err != nil {
				t.Fatal(err)
			}
			if err := tpm.PolicyPCRCommand(conn, sess, pcrs, testVersion, cc); err != nil {
				t.Fatal(err)
			}
			_ = tpm.PassGateKeyOr(conn, sess, scoped) // refused for Rewrap
			out, err := rewrapToNull(conn, gateKey.ObjectHandle, sess.Handle(), zgenDup, zgenName.Buffer, zgenSeed)
			closeSession()
			if err == nil {
				t.Errorf("TPM2_Rewrap of the ZGen object under the gate key, its gate passed for command %#x, succeeded", uint32(cc))
			}
			if bytes.Contains(out, s) {
				t.Errorf("the scoped share came out through TPM2_Rewrap under the gate key")
			}
		}

		anotherImage(t, conn)
		if _, err := tpm.Partials(conn, scoped, [][]byte{randomPoint(t)}, nil); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("partials in another image: %v, want the PCR mismatch", err)
		}
		rewrapTries(t, conn, tpm.ImportKeyHandle(key), gatePub, gateDup, gateSeed, nil)
	})
}

// TestOldFormatsAreRefused: blobs and scoped keys of the formats wrapped
// for the EK do not parse, and the error says what to do.
func TestOldFormatsAreRefused(t *testing.T) {
	key := tpmtest.RandomImportKey(t)
	good := bytes.Repeat([]byte{7}, 32)
	blob, err := tpm.Seal(key, tpm.PCRValues{8: good}, 1, []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	share := bytes.Repeat([]byte{1}, 32)
	scoped, err := tpm.SealScoped(key, tpm.PCRValues{8: good}, 1, share, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		data     []byte
		parse    func([]byte) error
		versions []byte
	}{
		{blob.Marshal(), func(b []byte) error { _, err := tpm.ParseBlob(b); return err }, []byte{1, 2}},
		{scoped.Marshal(), func(b []byte) error { _, err := tpm.ParseScopedKey(b); return err }, []byte{2, 3}},
	} {
		if err := c.parse(c.data); err != nil {
			t.Fatal(err)
		}
		for _, v := range c.versions {
			old := bytes.Clone(c.data)
			old[8] = v
			err := c.parse(old)
			if !errors.Is(err, tpm.ErrMalformedBlob) || !strings.Contains(err.Error(), "enroll the device again and run the ceremony again") {
				t.Errorf("%q version %d: got %v, want a refusal that says to enroll again", c.data[:8], v, err)
			}
		}
	}
}
