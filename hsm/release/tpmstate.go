package release

import (
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
)

// tpmState asks the TPM the questions the checks ask about its own state:
// the PCRs a share is sealed to (checkOpens), the version floor
// (belowFloor) and the free slots (checkRoom). Each is asked when its
// check runs, after the warrant verified: an answer read earlier could be
// overtaken (a PCR extended, the floor raised, slots taken by another
// program) while the warrant verifies, and a release entry written on it
// would spend the warrant for a share the TPM then refuses.
type tpmState struct{ t transport.TPM }

func (s tpmState) pcrs(indices []int) (tpm.PCRValues, error) { return tpm.ReadPCRs(s.t, indices...) }
func (s tpmState) floor() (uint64, error)                    { return tpm.ReadFloor(s.t) }
func (s tpmState) room() error                               { return checkRoom(s.t) }
