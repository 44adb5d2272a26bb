package release

import "github.com/custodian-project/custodian/hsm/internal/strictjson"

// Caps on the JSON this package reads.
const (
	// MaxResponse caps a JSON response body a client reads.
	MaxResponse = 1 << 20
	// maxAttestBody caps an attestation request ({"nonce":"hex"}).
	maxAttestBody = 4 << 10
	// maxRecord caps a request record; it holds the signed warrant.
	maxRecord = 1 << 20
)

// DecodeResponse reads a JSON response body of this API strictly: field
// names exactly as docs/api.md spells them, no duplicate or unknown keys,
// nothing after the object. The appliance reads request bodies and its own
// records by the same rules, so client and appliance agree on what a body
// says.
func DecodeResponse(data []byte, v any) error {
	return strictjson.Decode(data, v, MaxResponse)
}
