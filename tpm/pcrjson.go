package tpm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strconv"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// MarshalJSON writes PCR values as an object from decimal index to
// lowercase hex, the way tpm2_pcrread shows them: {"8":"ab12…"}.
func (v PCRValues) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for k, i := range v.Indices() {
		if k > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%q", strconv.Itoa(i), hex.EncodeToString(v[i]))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes and nothing else: canonical
// decimal indices 0..23 and 64 lowercase hex digits per value. It does not
// judge the values; [PCRValues.Check] does that for sealing policies.
func (v *PCRValues) UnmarshalJSON(data []byte) error {
	// Decoded with the rules of hsm's strict formats: a repeated index
	// is refused, not overwritten.
	var raw map[string]string
	if err := jsonv2.Unmarshal(data, &raw, jsontext.AllowDuplicateNames(false), jsontext.AllowInvalidUTF8(false)); err != nil {
		return fmt.Errorf("PCR values: %w", err)
	}
	out := make(PCRValues, len(raw))
	for key, val := range raw {
		i, err := strconv.Atoi(key)
		if err != nil || strconv.Itoa(i) != key || i < 0 || i > maxPCR {
			return fmt.Errorf("PCR index %q is not a number from 0 to %d", key, maxPCR)
		}
		d, err := hex.DecodeString(val)
		if err != nil || len(d) != 32 || hex.EncodeToString(d) != val {
			return fmt.Errorf("PCR %d: value must be 64 lowercase hex digits (SHA-256)", i)
		}
		out[i] = d
	}
	*v = out
	return nil
}
