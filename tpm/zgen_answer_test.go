package tpm

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// offCurveZGen answers PolicyCommandCode with success and ECDH_ZGen with
// (1, 1), which is not on P-256, as a faulty TPM would; a password
// session, so no HMAC or encryption to forge.
type offCurveZGen struct{}

func (offCurveZGen) Send(cmd []byte) ([]byte, error) {
	if tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) != tpm2.TPMCCECDHZGen {
		return []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0}, nil
	}
	one := make([]byte, 32)
	one[31] = 1
	params := append([]byte{0, 68, 0, 32}, one...)
	params = append(append(params, 0, 32), one...)
	out := binary.BigEndian.AppendUint32([]byte{0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}, uint32(len(params)))
	out = append(append(out, params...), 0, 0, 1, 0, 0) // nonce, continueSession, hmac
	binary.BigEndian.PutUint32(out[2:], uint32(len(out)))
	return out, nil
}

// TestBadZGenAnswerNamesTheTPM: an off-curve answer to ECDH_ZGen is the
// TPM's fault, and says so, not the wording of a malformed envelope point
// (which the officer would take for a bad list).
func TestBadZGenAnswerNamesTheTPM(t *testing.T) {
	g := baseOnce().point.Bytes()
	key := &tpm2.LoadResponse{ObjectHandle: 0x80000001, Name: tpm2.TPM2BName{Buffer: append([]byte{0, 0x0b}, make([]byte, 32)...)}}
	_, err := zgenPoint(offCurveZGen{}, tpm2.PasswordAuth(nil), &openGate{}, key, g)
	if err == nil || !strings.Contains(err.Error(), "the TPM's ECDH_ZGen answered a bad point") {
		t.Fatalf("an off-curve answer: %v; want it named as the TPM's", err)
	}
}
