package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
)

// Blob is a secret sealed to one TPM's import key, a PCR policy and a
// security version. Everything in it is public: the secret inside is
// encrypted to the import key and integrity-protected for the sealed
// object's Name.
type Blob struct {
	Key     *ImportKey // the import key it was made for
	PCRs    PCRValues  // the values the PCRs must hold for it to open
	Version uint64     // its image's security version: opens while the floor <= Version

	wrapped // the sealed data object

	encodedPublic []byte // the sealed object's public area as Seal encoded it, or nil
}

// The blob encoding, big-endian, one canonical form:
//
//	magic      "CUSTSEAL" (8 bytes), version 3 (1 byte)
//	key        uint16 length + SubjectPublicKeyInfo DER of the import key
//	pcrs       uint8 count, then per PCR in ascending order:
//	           uint8 index + 32-byte SHA-256 value
//	security   uint32: the image's security version, 1..MaxSecurityVersion
//	public     uint16 length + TPMT_PUBLIC of the sealed object
//	duplicate  uint16 length + TPM2B_PRIVATE contents
//	seed       uint16 length + TPM2B_ENCRYPTED_SECRET contents
const (
	blobMagic = "CUSTSEAL"
	// blobVersion 3 wraps for the import key. Version 2 blobs, wrapped
	// for the EK (which TPM2_Rewrap opens without the sealed object's
	// policy), and version 1 blobs, without a floor term, are refused.
	blobVersion = 3
	maxEKDER    = 1024
	maxTPMField = 1024
)

// ErrMalformedBlob is wrapped by every decoding error.
var ErrMalformedBlob = errors.New("malformed sealed blob")

// Marshal encodes the blob.
func (b *Blob) Marshal() []byte {
	public := b.encodedPublic
	if public == nil {
		public = tpm2.Marshal(b.public)
	}
	fields := [...][]byte{public, b.duplicate, b.seed}
	// Sized once and appended to: a ceremony encodes a blob per custodian,
	// and a cryptobyte builder allocates for each length-prefixed field.
	size := headerSize(blobMagic, b.Key, b.PCRs)
	for _, field := range fields {
		size += 2 + len(field)
	}
	out := appendHeader(make([]byte, 0, size), blobMagic, blobVersion, b.Key, b.PCRs, b.Version)
	for _, field := range fields {
		out = appendUint16Prefixed(out, field)
	}
	return out
}

// ParseBlob decodes and checks a blob: canonical encoding, a template
// import key,
// a usable PCR policy, and a sealed object bound to exactly that policy.
//
// A blob already parsed in this process is not checked again (as for
// ParseScopedKey): the checks are a function of the bytes alone.
func ParseBlob(data []byte) (*Blob, error) {
	b, err := parsedBlobs.parse(data, parseBlob)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBlob, err)
	}
	return b.clone(), nil
}

// parsedBlobs holds the blobs this process parsed and checked.
var parsedBlobs = newParsed[*Blob]()

// clone is a copy of b whose exported fields the caller may change
// without changing b. The import key and the sealed object, which
// nothing changes, are shared.
func (b *Blob) clone() *Blob {
	c := *b
	c.PCRs = b.PCRs.Clone()
	return &c
}

func parseBlob(data []byte) (*Blob, error) {
	s := cryptobyte.String(data)
	key, pcrs, version, _, err := readHeader(&s, blobMagic, "a sealed blob", blobVersion)
	if err != nil {
		return nil, err
	}
	w, err := readWrapped(&s)
	if err != nil {
		return nil, err
	}
	if !s.Empty() {
		return nil, errors.New("trailing data")
	}
	if err := checkSealedPublic(&w.public, pcrs, version); err != nil {
		return nil, err
	}
	return &Blob{Key: key, PCRs: pcrs, Version: version, wrapped: *w}, nil
}

// appendHeader appends what both blob formats start with: magic, format
// version, import key, PCR values and security version.
func appendHeader(out []byte, magic string, version uint8, key *ImportKey, pcrs PCRValues, security uint64) []byte {
	out = append(out, magic...)
	out = append(out, version)
	out = appendUint16Prefixed(out, key.der)
	out = append(out, uint8(len(pcrs)))
	var indices [maxPCR + 1]int
	for _, i := range pcrs.appendIndices(indices[:0]) {
		out = append(out, uint8(i))
		out = append(out, pcrs[i]...)
	}
	return binary.BigEndian.AppendUint32(out, uint32(security))
}

// appendUint16Prefixed appends field after its length in 2 bytes. As a
// cryptobyte builder's BytesOrPanic would, it panics on a field too long
// for that; nothing this package seals or parses has one.
func appendUint16Prefixed(out, field []byte) []byte {
	if len(field) > math.MaxUint16 {
		panic(fmt.Sprintf("tpm: a field of %d bytes does not fit a 2-byte length", len(field)))
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(field)))
	return append(out, field...)
}

// headerSize is the length of what appendHeader appends.
func headerSize(magic string, key *ImportKey, pcrs PCRValues) int {
	size := len(magic) + 1 + 2 + len(key.der) + 1 + 4
	for _, v := range pcrs {
		size += 1 + len(v)
	}
	return size
}

// readHeader reads what appendHeader wrote, for the format with this magic,
// in one of the versions given.
func readHeader(s *cryptobyte.String, magic, what string, versions ...uint8) (*ImportKey, PCRValues, uint64, uint8, error) {
	var got []byte
	var version uint8
	if !s.ReadBytes(&got, len(magic)) || string(got) != magic {
		return nil, nil, 0, 0, fmt.Errorf("not %s (bad magic)", what)
	}
	if !s.ReadUint8(&version) || !slices.Contains(versions, version) {
		return nil, nil, 0, 0, fmt.Errorf("unsupported version %d: this format was sealed to the endorsement key, which does not keep it on the device; enroll the device again and run the ceremony again", version)
	}
	ek, err := readImportKey(s)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	pcrs, err := readPCRs(s)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	var security uint32
	if !s.ReadUint32(&security) {
		return nil, nil, 0, 0, errors.New("truncated security version")
	}
	if err := CheckSecurityVersion(uint64(security)); err != nil {
		return nil, nil, 0, 0, err
	}
	return ek, pcrs, uint64(security), version, nil
}

func readImportKey(s *cryptobyte.String) (*ImportKey, error) {
	var der cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&der) || len(der) > maxEKDER {
		return nil, errors.New("truncated or oversized import key")
	}
	key, err := ParseImportKey(der)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(key.MarshalPKIX(), der) {
		return nil, errors.New("import key is not canonically encoded")
	}
	return key, nil
}

func readPCRs(s *cryptobyte.String) (PCRValues, error) {
	var n uint8
	if !s.ReadUint8(&n) {
		return nil, errors.New("truncated PCR list")
	}
	pcrs := make(PCRValues, n)
	last := -1
	for range n {
		var idx uint8
		var val []byte
		if !s.ReadUint8(&idx) || !s.ReadBytes(&val, 32) {
			return nil, errors.New("truncated PCR list")
		}
		if int(idx) <= last {
			return nil, errors.New("PCR indices not strictly ascending")
		}
		last = int(idx)
		pcrs[int(idx)] = val
	}
	if err := pcrs.Check(); err != nil {
		return nil, err
	}
	return pcrs, nil
}
