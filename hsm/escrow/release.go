package escrow

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
)

// Release is the package an appliance hands out for one key ID of a
// warrant: its share (share mode) or its partial decryptions of the
// envelopes the warrant names (scoped mode), sealed with HPKE to the
// recipient the warrant names, and the proof that the release is in the
// appliance's ledger.
type Release struct {
	Version       int    `json:"version"`
	Mode          string `json:"mode"`
	KeyID         string `json:"key_id"`
	CustodianID   string `json:"custodian_id"`
	Index         int    `json:"index"`
	WarrantDigest []byte `json:"warrant_digest"` // SHA-256 of the signed warrant
	Recipient     string `json:"recipient"`
	SealedShare   []byte `json:"sealed_share,omitempty"` // share mode
	// SealedPartials, in scoped mode, is the JSON of a [PartialsBatch]
	// sealed under [BatchInfo] (version 2), or of []EnvelopePartial sealed
	// under [PartialsInfo] (version 1).
	SealedPartials []byte `json:"sealed_partials,omitempty"`
	// Ledger proves the release entry is in the custodian's ledger: one
	// entry per key ID, in scoped mode committing to the warrant and its
	// envelope list.
	Ledger *ledger.Inclusion `json:"ledger,omitempty"`
	// Entries, in scoped packages made when a scoped release had one entry
	// per envelope, prove each partial's entry; packages made now leave it
	// out.
	Entries []*ledger.Inclusion `json:"entries,omitempty"`
}

// ShareInfo is the HPKE info a released share is sealed under. It binds the
// warrant, the custodian, the key ID and the share index, so a package
// cannot be passed off as another custodian's or another warrant's.
func ShareInfo(warrantDigest []byte, custodianID, keyID string, index int) []byte {
	var b bytes.Buffer
	b.WriteString("custodian release v1\x00")
	b.Write(warrantDigest)
	for _, s := range []string{custodianID, keyID, strconv.Itoa(index)} {
		b.WriteByte(0)
		b.WriteString(s)
	}
	return b.Bytes()
}

// ReleaseVersion is the version of the packages made now: a scoped one
// seals a [PartialsBatch]. Version 1 packages, whose scoped partials each
// carry their own proof ([EnvelopePartial]), are still read: a release is
// logged once per key ID and warrant, so a package already handed out
// cannot be made again in the new format.
const ReleaseVersion = 2

// releaseVersionPerEnvelope is the version whose scoped partials each
// carry a proof.
const releaseVersionPerEnvelope = 1

// PartialsBatch is what a version 2 scoped package seals: the partial of
// every envelope the warrant names for the key ID, in the warrant's
// order, and the TPM's one proof for all of them (docs/escrow.md,
// "Batches").
type PartialsBatch struct {
	Partials []BatchedPartial `json:"partials"`
	Proof    tpm.BatchProof   `json:"proof"`
}

// BatchedPartial is one envelope's partial in a [PartialsBatch].
type BatchedPartial struct {
	Enc     []byte `json:"enc"`     // the envelope's encapsulated key R
	Partial []byte `json:"partial"` // s_i·R, uncompressed SEC1
}

// NewPartialsBatch pairs the batch the TPM computed for points with them.
func NewPartialsBatch(points [][]byte, b *tpm.Batch) (*PartialsBatch, error) {
	if len(points) != len(b.Partials) {
		return nil, fmt.Errorf("%d partials for %d envelopes", len(b.Partials), len(points))
	}
	pb := &PartialsBatch{Partials: make([]BatchedPartial, len(points)), Proof: b.Proof}
	for i := range points {
		pb.Partials[i] = BatchedPartial{Enc: points[i], Partial: b.Partials[i]}
	}
	return pb, nil
}

// Split returns the envelopes' points and the batch as tpm.VerifyBatch
// takes them.
func (pb *PartialsBatch) Split() (points [][]byte, b *tpm.Batch) {
	points = make([][]byte, len(pb.Partials))
	b = &tpm.Batch{Partials: make([][]byte, len(pb.Partials)), Proof: pb.Proof}
	for i, p := range pb.Partials {
		points[i], b.Partials[i] = p.Enc, p.Partial
	}
	return points, b
}

// EnvelopePartial is a custodian's partial decryption of one envelope with
// its own proof, as version 1 packages carry it.
type EnvelopePartial struct {
	Enc []byte `json:"enc"` // the envelope's encapsulated key R
	tpm.Partial
}

// PartialsInfo is the HPKE info a version 1 scoped release's partials are
// sealed under; it binds what ShareInfo binds, under its own label.
// Partials are sealed although they are not shares: t of them open the
// envelope.
func PartialsInfo(warrantDigest []byte, custodianID, keyID string, index int) []byte {
	info := ShareInfo(warrantDigest, custodianID, keyID, index)
	return append([]byte("custodian partials v1\x00"), info...)
}

// BatchInfo is the HPKE info a version 2 scoped release's batch is sealed
// under. Its own label means a package's version cannot be changed
// without the content failing to open.
func BatchInfo(warrantDigest []byte, custodianID, keyID string, index int) []byte {
	info := ShareInfo(warrantDigest, custodianID, keyID, index)
	return append([]byte("custodian partials batch v2\x00"), info...)
}

// SealPartials makes the release package of a scoped key ID from its
// batch of partials.
func SealPartials(to *recipient.PublicKey, warrantDigest []byte, custodianID, keyID string, index int, batch *PartialsBatch) (*Release, error) {
	data, err := json.Marshal(batch)
	if err != nil {
		return nil, err
	}
	sealed, err := to.Seal(BatchInfo(warrantDigest, custodianID, keyID, index), data)
	if err != nil {
		return nil, err
	}
	return &Release{
		Version: ReleaseVersion, Mode: ModeScoped, KeyID: keyID, CustodianID: custodianID, Index: index,
		WarrantDigest: warrantDigest, Recipient: to.String(), SealedPartials: sealed,
	}, nil
}

// SealShare makes the release package for a share.
func SealShare(to *recipient.PublicKey, warrantDigest []byte, custodianID, keyID string, index int, share []byte) (*Release, error) {
	sealed, err := to.Seal(ShareInfo(warrantDigest, custodianID, keyID, index), share)
	if err != nil {
		return nil, err
	}
	return &Release{
		Version: ReleaseVersion, Mode: ModeShare, KeyID: keyID, CustodianID: custodianID, Index: index,
		WarrantDigest: warrantDigest, Recipient: to.String(), SealedShare: sealed,
	}, nil
}

// MaxReleaseSize caps a release package: a scoped one holds a partial
// (some 200 bytes of JSON with its envelope's R; 560 with a proof each in
// version 1) for each of up to 100 000 envelopes, sealed and then base64
// in the package.
const MaxReleaseSize = 128 << 20

// ParseRelease decodes a release package strictly.
func ParseRelease(data []byte) (*Release, error) {
	var r Release
	if err := strictjson.Decode(data, &r, MaxReleaseSize); err != nil {
		return nil, fmt.Errorf("release package: %w", err)
	}
	if r.Version != ReleaseVersion && r.Version != releaseVersionPerEnvelope {
		return nil, fmt.Errorf("release package: version %d is not 1 or 2: a newer package needs a newer custodian program", r.Version)
	}
	if r.Mode != ModeShare && r.Mode != ModeScoped {
		return nil, fmt.Errorf("release package: unsupported mode %q", r.Mode)
	}
	if (r.Mode == ModeShare) != (len(r.SealedShare) > 0) || (r.Mode == ModeScoped) != (len(r.SealedPartials) > 0) ||
		(r.Mode == ModeShare && r.Entries != nil) {
		return nil, fmt.Errorf("release package: a %s release carries exactly its own sealed content", r.Mode)
	}
	if err := ids.CheckKeyID(r.KeyID); err != nil {
		return nil, fmt.Errorf("release package: %w", err)
	}
	if err := ids.CheckCustodian(r.CustodianID); err != nil {
		return nil, fmt.Errorf("release package: %w", err)
	}
	if len(r.WarrantDigest) != sha256.Size {
		return nil, fmt.Errorf("release package: the warrant digest is not SHA-256")
	}
	return &r, nil
}

// Marshal encodes the package as indented JSON.
func (r *Release) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(r, "", "  ")
	return append(data, '\n'), err
}
