package tpm_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// otherPCRs passes commands to a TPM, but a TPM2_PCR_Read of one SHA-256
// selection is sent as a read of PCR 0 alone: the TPM answers other PCRs
// than the ones asked, as a damaged TPM or something between the device
// and its TPM might.
type otherPCRs struct{ transport.TPM }

func (o otherPCRs) Send(cmd []byte) ([]byte, error) {
	// header(10) count(4) hash(2) sizeofSelect(1) pcrSelect(3)
	if len(cmd) == 20 && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:])) == tpm2.TPMCCPCRRead && cmd[16] == 3 {
		cmd = append([]byte(nil), cmd...)
		cmd[17], cmd[18], cmd[19] = 1, 0, 0
	}
	return o.TPM.Send(cmd)
}

// TestReadPCRsRefusesAnAnswerForOtherPCRs: a TPM that answers a PCR read
// with PCRs it was not asked for gives an error, in bounded time — not a
// loop that asks it again forever (after the press, the release would
// wait on it holding the TPM gate).
func TestReadPCRsRefusesAnAnswerForOtherPCRs(t *testing.T) {
	conn := tpmtest.StartSwtpm(t).Open(t)
	done := make(chan error, 1)
	go func() {
		_, err := tpm.ReadPCRs(otherPCRs{conn}, 8)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("PCR 8 read from an answer for PCR 0")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadPCRs still asking after 10 s: a TPM answering other PCRs keeps it in a loop")
	}
}
