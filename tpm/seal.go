package tpm

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
)

// MaxSecret is the largest secret a blob can hold: the TPM's MAX_SYM_DATA
// for sealed data objects.
const MaxSecret = 128

// Seal makes a blob that only the TPM holding key can import, and whose
// secret that TPM unseals only while its SHA-256 PCRs hold exactly pcrs
// and its security version floor is at most version (the image's
// security version, see [FloorIndex]). It runs offline: pcrs are the
// values the device is expected to have (a prediction from the image, or
// a recorded measurement), not read from any TPM.
//
// The sealed object is a keyed-hash data object whose only authorization
// is PolicyPCR(pcrs) · PolicyNV(floor <= version): no password, no
// duplication. Its parent is the import key, whose policy refuses
// TPM2_Rewrap: the one way to open the outer wrapper is to import and
// load it, and then only its own policy unseals it.
func Seal(key *ImportKey, pcrs PCRValues, version uint64, secret []byte) (*Blob, error) {
	if len(secret) == 0 || len(secret) > MaxSecret {
		return nil, fmt.Errorf("secret is %d bytes; a sealed blob holds 1 to %d", len(secret), MaxSecret)
	}
	policy, err := ImagePolicyDigest(pcrs, version)
	if err != nil {
		return nil, err
	}
	public, sensitive, err := sealedObject(policy, secret)
	if err != nil {
		return nil, err
	}
	// As wrap does, but naming the object from the bytes encoded once
	// (wrap names it from the structure, encoding it again).
	encoded := encodeSealedPublic(&public)
	name := sealedName(encoded)
	inner := encodeSealedSensitive(&sensitive)
	defer clear(inner)
	encap, err := key.encapsulation()
	if err != nil {
		return nil, err
	}
	duplicate, seed, err := createDuplicate(rand.Reader, encap, name, inner)
	if err != nil {
		return nil, fmt.Errorf("wrapping for the import key: %w", err)
	}
	return &Blob{Key: key, PCRs: pcrs.Clone(), Version: version, encodedPublic: encoded,
		wrapped: wrapped{public: public, duplicate: duplicate, seed: seed}}, nil
}

// encodeSealedPublic is tpm2.Marshal(public) for a public area from
// sealedObject. A ceremony seals one share per custodian under the same
// policy, and go-tpm's reflection encoding of the area cost more than the
// RSA-OAEP encryption of the wrapping seed; so the library's encoding is
// kept for the last policy, and only the unique field, which ends a
// keyed-hash area (TPM2B_DIGEST: 2-byte size, 32 bytes), is replaced. The
// Name is nameAlg || SHA-256 of these bytes (TPM 2.0 Part 1, "Names"),
// as tpm2.ObjectName computes it (TestSealedObjectEncodingIsTheLibrarys).
func encodeSealedPublic(public *tpm2.TPMTPublic) []byte {
	unique, err := public.Unique.KeyedHash()
	if err != nil || len(unique.Buffer) != sha256.Size {
		return tpm2.Marshal(*public)
	}
	sealedPrefix.mu.Lock()
	defer sealedPrefix.mu.Unlock()
	if sealedPrefix.prefix == nil || !bytes.Equal(sealedPrefix.policy, public.AuthPolicy.Buffer) {
		template := *public
		template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, sha256.Size)})
		encoded := tpm2.Marshal(template)
		cut := len(encoded) - sha256.Size
		if cut < 2 || binary.BigEndian.Uint16(encoded[cut-2:]) != sha256.Size {
			return tpm2.Marshal(*public) // not the layout above: no shortcut
		}
		sealedPrefix.policy = bytes.Clone(public.AuthPolicy.Buffer)
		sealedPrefix.prefix = encoded[:cut]
	}
	out := make([]byte, 0, len(sealedPrefix.prefix)+len(unique.Buffer))
	return append(append(out, sealedPrefix.prefix...), unique.Buffer...)
}

// encodeSealedSensitive is tpm2.Marshal(sensitive) for a sensitive area
// from sealedObject, by the same shortcut as encodeSealedPublic: go-tpm
// encodes an area of the same secret length with marker bytes once, and
// the seed value and the secret, which the encoding holds as they are,
// replace the markers. An area whose markers are not where they are
// looked for is encoded by go-tpm each time.
func encodeSealedSensitive(sensitive *tpm2.TPMTSensitive) []byte {
	data, err := sensitive.Sensitive.Bits()
	if err != nil || len(sensitive.SeedValue.Buffer) != sha256.Size || len(sensitive.AuthValue.Buffer) != 0 {
		return tpm2.Marshal(*sensitive)
	}
	secret, seed := data.Buffer, sensitive.SeedValue.Buffer
	layout := sealedSensitiveLayout(len(secret))
	if layout == nil {
		return tpm2.Marshal(*sensitive)
	}
	out := bytes.Clone(layout.encoded)
	copy(out[layout.seed:], seed)
	copy(out[len(out)-len(secret):], secret)
	return out
}

type sensitiveLayout struct {
	encoded []byte // the area with marker bytes in place of the seed and secret
	seed    int    // where the seed value starts
}

var sensitiveLayouts struct {
	mu sync.Mutex
	by map[int]*sensitiveLayout
}

const seedMarker, secretMarker = 0xa5, 0x5a

// sealedSensitiveLayout is the layout of a sealed sensitive area holding
// a secret of n bytes, or nil if go-tpm's encoding does not hold the seed
// after its size and the secret at the end.
func sealedSensitiveLayout(n int) *sensitiveLayout {
	sensitiveLayouts.mu.Lock()
	defer sensitiveLayouts.mu.Unlock()
	if l, ok := sensitiveLayouts.by[n]; ok {
		return l
	}
	seed, secret := bytes.Repeat([]byte{seedMarker}, sha256.Size), bytes.Repeat([]byte{secretMarker}, n)
	encoded := tpm2.Marshal(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: secret}),
	})
	var l *sensitiveLayout
	if at := bytes.Index(encoded, seed); at >= 2 && bytes.HasSuffix(encoded, secret) &&
		binary.BigEndian.Uint16(encoded[at-2:]) == sha256.Size && at+sha256.Size <= len(encoded)-n {
		l = &sensitiveLayout{encoded: encoded, seed: at}
	}
	if sensitiveLayouts.by == nil {
		sensitiveLayouts.by = map[int]*sensitiveLayout{}
	}
	sensitiveLayouts.by[n] = l
	return l
}

// sealedName is the Name of a SHA-256 object with this encoded public
// area: nameAlg || SHA-256(area) (TPM 2.0 Part 1, "Names").
func sealedName(encoded []byte) []byte {
	digest := sha256.Sum256(encoded)
	return append(binary.BigEndian.AppendUint16(nil, uint16(tpm2.TPMAlgSHA256)), digest[:]...)
}

// sealedPrefix is the encoding of the last sealed public area before its
// unique value, and the policy it holds (the only other field that varies).
var sealedPrefix struct {
	mu     sync.Mutex
	policy []byte
	prefix []byte
}

// sealedObject builds the public and sensitive areas of a sealed data
// object holding secret, authorized only by the policy digest.
func sealedObject(policy, secret []byte) (tpm2.TPMTPublic, tpm2.TPMTSensitive, error) {
	// The seed obfuscates the unique field, so the public area reveals
	// nothing about a low-entropy secret.
	seed := make([]byte, sha256.Size)
	if _, err := rand.Read(seed); err != nil {
		return tpm2.TPMTPublic{}, tpm2.TPMTSensitive{}, err
	}
	var buf [sha256.Size + MaxSecret]byte // seed || secret, hashed in place
	unique := sha256.Sum256(append(append(buf[:0], seed...), secret...))
	clear(buf[:])
	public := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			// Imported objects cannot be fixedTPM/fixedParent; the
			// import key's wrapping and the PCR policy are what pin it to
			// the device.
			UserWithAuth:    false,
			AdminWithPolicy: true,
			NoDA:            true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
	sensitive := tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: secret}),
	}
	return public, sensitive, nil
}

// checkSealedPublic verifies that a public area (from a decoded blob) is
// exactly the kind of object Seal makes, bound to pcrs and version. A blob
// whose object could be opened with a password, without the PCR policy or
// without the floor is refused before it reaches the TPM.
func checkSealedPublic(public *tpm2.TPMTPublic, pcrs PCRValues, version uint64) error {
	policy, err := ImagePolicyDigest(pcrs, version)
	if err != nil {
		return err
	}
	want := tpm2.TPMAObject{AdminWithPolicy: true, NoDA: true}
	if public.Type != tpm2.TPMAlgKeyedHash || public.NameAlg != tpm2.TPMAlgSHA256 ||
		public.ObjectAttributes != want {
		return errors.New("sealed object is not a policy-only SHA-256 data object")
	}
	params, err := public.Parameters.KeyedHashDetail()
	if err != nil || params.Scheme.Scheme != tpm2.TPMAlgNull {
		return errors.New("sealed object is a keyed-hash key, not sealed data")
	}
	if !equalBytes(public.AuthPolicy.Buffer, policy) {
		return errors.New("sealed object's policy does not match the blob's PCR values and security version")
	}
	return nil
}
