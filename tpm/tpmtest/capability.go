package tpmtest

import (
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"
)

// PropertiesAsked reports whether cmd is a TPM2_GetCapability for TPM
// properties sent without sessions, and if so from which property on:
// tag(2) size(4) commandCode(4) capability(4) property(4) propertyCount(4).
// Transports in tests use it to answer, count or change that command.
func PropertiesAsked(cmd []byte) (first tpm2.TPMPT, ok bool) {
	if len(cmd) != 22 || tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:])) != tpm2.TPMCCGetCapability ||
		tpm2.TPMCap(binary.BigEndian.Uint32(cmd[10:])) != tpm2.TPMCapTPMProperties {
		return 0, false
	}
	return tpm2.TPMPT(binary.BigEndian.Uint32(cmd[14:])), true
}

// PropertyCountAt is the offset of a GetCapability command's
// propertyCount, for a test that changes it.
const PropertyCountAt = 18
