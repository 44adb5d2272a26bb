package tpm_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
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
