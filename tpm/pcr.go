package tpm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// PCR indices that must never protect a secret: software at locality 0 can
// reset PCR 16 (debug) and PCR 23 (application) at will.
const (
	pcrDebug       = 16
	pcrApplication = 23
	maxPCR         = 23
)

// PCRValues maps PCR indices of the SHA-256 bank to their 32-byte values.
// It is both a reading (what the TPM holds now) and a policy (what the TPM
// must hold for a sealed blob to open).
type PCRValues map[int][]byte

// Policy errors. Sealing refuses a selection that would protect nothing.
var (
	ErrEmptySelection = errors.New("empty PCR selection: a secret sealed to no PCRs opens on any software")
	ErrResettablePCR  = errors.New("PCRs 16 and 23 can be reset by any software and are never used")
	ErrUnextendedPCR  = errors.New("PCR value is all zero: the PCR was never extended and binds nothing")
)

// Indices returns the selected PCR indices in ascending order.
func (v PCRValues) Indices() []int {
	return v.appendIndices(make([]int, 0, len(v)))
}

// appendIndices appends the selected indices to dst in ascending order:
// a caller that only reads them passes an array of its own (a usable
// policy has at most maxPCR+1), so that sealing allocates none.
func (v PCRValues) appendIndices(dst []int) []int {
	start := len(dst)
	for i := range v {
		dst = append(dst, i)
	}
	slices.Sort(dst[start:])
	return dst
}

// Check reports whether v is usable as a sealing policy: non-empty, indices
// 0..23 except 16 and 23, SHA-256 sized values, none of them all zero.
func (v PCRValues) Check() error {
	if len(v) == 0 {
		return ErrEmptySelection
	}
	var indices [maxPCR + 1]int
	for _, i := range v.appendIndices(indices[:0]) {
		if err := checkIndex(i); err != nil {
			return err
		}
		if len(v[i]) != sha256.Size {
			return fmt.Errorf("PCR %d: value is %d bytes, want %d (SHA-256 bank)", i, len(v[i]), sha256.Size)
		}
		if bytes.Equal(v[i], make([]byte, sha256.Size)) {
			return fmt.Errorf("PCR %d: %w", i, ErrUnextendedPCR)
		}
	}
	return nil
}

func checkIndex(i int) error {
	if i < 0 || i > maxPCR {
		return fmt.Errorf("PCR %d does not exist (0..%d)", i, maxPCR)
	}
	if i == pcrDebug || i == pcrApplication {
		return fmt.Errorf("PCR %d: %w", i, ErrResettablePCR)
	}
	return nil
}

// Clone returns a deep copy of v. The values share one array (each
// capped at its length, so that appending to one copies it): every blob
// a ceremony seals holds a copy.
func (v PCRValues) Clone() PCRValues {
	size := 0
	for _, val := range v {
		size += len(val)
	}
	values := make([]byte, 0, size)
	out := make(PCRValues, len(v))
	for i, val := range v {
		if val == nil {
			out[i] = nil
			continue
		}
		start := len(values)
		values = append(values, val...)
		out[i] = values[start:len(values):len(values)]
	}
	return out
}

// Extend returns the value PCR i would hold after extending it with
// digest, as the TPM computes it: SHA-256(old || digest). v is unchanged.
func (v PCRValues) Extend(i int, digest []byte) PCRValues {
	out := v.Clone()
	old := out[i]
	if old == nil {
		old = make([]byte, sha256.Size)
	}
	h := sha256.New()
	h.Write(old)
	h.Write(digest)
	out[i] = h.Sum(nil)
	return out
}

// Equal reports whether v and w select the same PCRs with the same values.
func (v PCRValues) Equal(w PCRValues) bool {
	if len(v) != len(w) {
		return false
	}
	for i, val := range v {
		if !bytes.Equal(val, w[i]) {
			return false
		}
	}
	return true
}

// selection is the TPM encoding of v's indices in the SHA-256 bank.
func (v PCRValues) selection() tpm2.TPMLPCRSelection {
	return selectionOf(v.Indices())
}

func selectionOf(indices []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(indices))
	for k, i := range indices {
		u[k] = uint(i)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// digest is the TPM's pcrDigest over v: SHA-256 of the values
// concatenated in ascending index order, as PolicyPCR and Quote compute it.
func (v PCRValues) digest() []byte {
	h := sha256.New()
	for _, i := range v.Indices() {
		h.Write(v[i])
	}
	return h.Sum(nil)
}

// PolicyDigest returns the authorization policy digest of
// TPM2_PolicyPCR over v, starting from an empty policy. It is the value
// tpm2_createpolicy --policy-pcr prints for the same selection and values.
func (v PCRValues) PolicyDigest() ([]byte, error) {
	if err := v.Check(); err != nil {
		return nil, err
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	cmd := tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: v.digest()}, Pcrs: v.selection()}
	if err := cmd.Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// ReadPCRs reads the given PCRs of the SHA-256 bank. A TPM returns at most
// eight values per PCR_Read, so it asks until every index is answered.
func ReadPCRs(t transport.TPM, indices ...int) (PCRValues, error) {
	for _, i := range indices {
		if i < 0 || i > maxPCR {
			return nil, fmt.Errorf("PCR %d does not exist (0..%d)", i, maxPCR)
		}
	}
	out := make(PCRValues, len(indices))
	pending := slices.Clone(indices)
	slices.Sort(pending)
	pending = slices.Compact(pending)
	for len(pending) > 0 {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: selectionOf(pending)}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("reading PCRs: %w", err)
		}
		got := selectedIndices(rsp.PCRSelectionOut)
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, errors.New("reading PCRs: the TPM has no SHA-256 bank for them")
		}
		// A TPM answers a prefix of what was asked (TPM2_PCR_Read reads
		// up to eight digests): an answer for a PCR not pending, or one
		// that reads none of them, is not the TPM's to give, and would
		// make this loop ask forever.
		for k, i := range got {
			if !slices.Contains(pending, i) {
				return nil, fmt.Errorf("reading PCRs: the TPM answered for PCR %d, which was not asked", i)
			}
			out[i] = rsp.PCRValues.Digests[k].Buffer
		}
		pending = slices.DeleteFunc(pending, func(i int) bool { return out[i] != nil })
	}
	return out, nil
}

// selectedIndices lists the SHA-256 PCRs a selection names, ascending.
func selectedIndices(sel tpm2.TPMLPCRSelection) []int {
	var idx []int
	for _, s := range sel.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 {
			continue
		}
		for byteIdx, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) != 0 {
					idx = append(idx, byteIdx*8+bit)
				}
			}
		}
	}
	return idx
}

// ExtendPCR extends PCR i of the SHA-256 bank with a 32-byte digest.
func ExtendPCR(t transport.TPM, i int, digest []byte) error {
	if i < 0 || i > maxPCR {
		return fmt.Errorf("PCR %d does not exist (0..%d)", i, maxPCR)
	}
	if len(digest) != sha256.Size {
		return fmt.Errorf("extend digest is %d bytes, want %d", len(digest), sha256.Size)
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(i), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: digest,
		}}},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("extending PCR %d: %w", i, err)
	}
	return nil
}
