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
	Version        int    `json:"version"`
	Mode           string `json:"mode"`
	KeyID          string `json:"key_id"`
	CustodianID    string `json:"custodian_id"`
	Index          int    `json:"index"`
	WarrantDigest  []byte `json:"warrant_digest"` // SHA-256 of the signed warrant
	Recipient      string `json:"recipient"`
	SealedShare    []byte `json:"sealed_share,omitempty"`    // share mode
	SealedPartials []byte `json:"sealed_partials,omitempty"` // scoped mode: JSON []EnvelopePartial
	// Ledger proves the release entry is in the custodian's ledger (in
	// scoped mode, the first partial's entry).
	Ledger *ledger.Inclusion `json:"ledger,omitempty"`
	// Entries, in scoped mode, prove each partial's own release entry, in
	// the order of the partials.
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

// EnvelopePartial is a custodian's partial decryption of one envelope.
type EnvelopePartial struct {
	Enc []byte `json:"enc"` // the envelope's encapsulated key R
	tpm.Partial
}

// PartialsInfo is the HPKE info a scoped release's partials are sealed
// under; it binds what ShareInfo binds, under its own label. Partials are
// sealed although they are not shares: t of them open the envelope.
func PartialsInfo(warrantDigest []byte, custodianID, keyID string, index int) []byte {
	info := ShareInfo(warrantDigest, custodianID, keyID, index)
	return append([]byte("custodian partials v1\x00"), info...)
}

// SealPartials makes the release package of a scoped key ID.
func SealPartials(to *recipient.PublicKey, warrantDigest []byte, custodianID, keyID string, index int, partials []EnvelopePartial) (*Release, error) {
	data, err := json.Marshal(partials)
	if err != nil {
		return nil, err
	}
	sealed, err := to.Seal(PartialsInfo(warrantDigest, custodianID, keyID, index), data)
	if err != nil {
		return nil, err
	}
	return &Release{
		Version: Version, Mode: ModeScoped, KeyID: keyID, CustodianID: custodianID, Index: index,
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
		Version: Version, Mode: ModeShare, KeyID: keyID, CustodianID: custodianID, Index: index,
		WarrantDigest: warrantDigest, Recipient: to.String(), SealedShare: sealed,
	}, nil
}

// ParseRelease decodes a release package strictly.
func ParseRelease(data []byte) (*Release, error) {
	var r Release
	if err := strictjson.Decode(data, &r, maxReleaseSize); err != nil {
		return nil, fmt.Errorf("release package: %w", err)
	}
	if r.Version != Version || (r.Mode != ModeShare && r.Mode != ModeScoped) {
		return nil, fmt.Errorf("release package: unsupported version %d or mode %q", r.Version, r.Mode)
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
