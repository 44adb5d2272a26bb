package tpm

import "github.com/google/go-tpm/tpm2"

// WrappedOf returns the public area, duplicate and encrypted seed of a
// sealed blob's object, for tests that hand them to the TPM themselves.
func WrappedOf(b *Blob) (tpm2.TPMTPublic, []byte, []byte) {
	return b.public, b.duplicate, b.seed
}

// ScopedWrapped returns the gate key's and the ZGen object's public
// areas, duplicates and seeds of a version 3 scoped key.
func ScopedWrapped(k *ScopedKey) (gatePub tpm2.TPMTPublic, gateDup, gateSeed []byte, zgenPub tpm2.TPMTPublic, zgenDup, zgenSeed []byte) {
	return k.gateKey.public, k.gateKey.duplicate, k.gateKey.seed, k.zgen.public, k.zgen.duplicate, k.zgen.seed
}

// WrapFor duplicates an object of public area pub and sensitive area
// sens for import under parent, as the ceremony does.
func WrapFor(parent *tpm2.TPMTPublic, pub tpm2.TPMTPublic, sens tpm2.TPMTSensitive) (dup, seed []byte, err error) {
	w, err := wrap(parent, pub, sens)
	if err != nil {
		return nil, nil, err
	}
	return w.duplicate, w.seed, nil
}

// EKPublic is the public area of e.
func EKPublic(e *EK) tpm2.TPMTPublic { return e.public }
