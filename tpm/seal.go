package tpm

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

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
	w, err := wrap(&key.public, public, sensitive)
	if err != nil {
		return nil, err
	}
	return &Blob{Key: key, PCRs: pcrs.Clone(), Version: version, wrapped: *w}, nil
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
	unique := sha256.Sum256(append(append([]byte{}, seed...), secret...))
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
