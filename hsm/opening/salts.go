package opening

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
)

// Salt is the salt of one ledger entry, as the appliance gives it to the
// court officer's client with a request's result.
type Salt struct {
	Index int64  `json:"index"`
	Salt  string `json:"salt"` // hex
}

// SaltsFile is what `custodian release` keeps for the court: the salts of
// the entries the appliance wrote about one warrant. It is the court's
// secret until the court opens an entry: whoever holds it and the warrant
// can prove which entries were about that warrant.
type SaltsFile struct {
	Version int `json:"version"`
	// Server is the appliance's address the salts came from.
	Server string `json:"server"`
	// WarrantDigest is the SHA-256 of the warrant's signed content, hex
	// (as `custodian warrant show` prints it).
	WarrantDigest string `json:"warrant_digest"`
	Salts         []Salt `json:"salts"`
}

// MaxSaltsFile caps a salts file: one entry per key ID and a refusal.
const MaxSaltsFile = 64 << 10

// ErrSaltsFile wraps every reason a salts file is refused.
var ErrSaltsFile = errors.New("the salts file is malformed")

// ParseSaltsFile decodes a salts file strictly.
func ParseSaltsFile(data []byte) (*SaltsFile, error) {
	var f SaltsFile
	if err := strictjson.Decode(data, &f, MaxSaltsFile); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSaltsFile, err)
	}
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSaltsFile, err)
	}
	return &f, nil
}

func (f *SaltsFile) check() error {
	if f.Version != Version {
		return fmt.Errorf("version %d; this custodian reads version %d", f.Version, Version)
	}
	if d, err := hex.DecodeString(f.WarrantDigest); err != nil || len(d) != 32 || f.WarrantDigest != strings.ToLower(f.WarrantDigest) {
		return errors.New("the warrant digest must be 32 bytes in lowercase hex")
	}
	if len(f.Salts) == 0 {
		return errors.New("it holds no salt")
	}
	seen := map[int64]bool{}
	for _, s := range f.Salts {
		if s.Index < 0 || seen[s.Index] {
			return fmt.Errorf("entry %d is negative or listed twice", s.Index)
		}
		seen[s.Index] = true
		if _, err := decodeSalt(s.Salt); err != nil {
			return fmt.Errorf("entry %d: %v", s.Index, err)
		}
	}
	return nil
}

// Marshal encodes the salts file as indented JSON.
func (f *SaltsFile) Marshal() ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// Lookup returns the salt the file holds for entry index.
func (f *SaltsFile) Lookup(index int64) ([]byte, bool) {
	for _, s := range f.Salts {
		if s.Index == index {
			salt, err := decodeSalt(s.Salt)
			return salt, err == nil
		}
	}
	return nil, false
}

// EncodeSalt is a salt as Salt and the opening carry it.
func EncodeSalt(salt []byte) string { return hex.EncodeToString(salt) }
