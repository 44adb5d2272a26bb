package tpm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/google/go-tpm/tpm2"
)

// createDuplicate is tpm2.CreateDuplicate, byte for byte: an outer
// duplication wrapper and no inner one (TPM 2.0 Part 1, "Outer
// Duplication Wrapper") of the encoded sensitive area of the object named
// name, for import under parent. A ceremony makes one per custodian, and
// go-tpm encodes the two size-prefixed buffers of the wrapper through its
// reflection marshaller one byte at a time, which cost a third of the
// RSA-OAEP encryption every wrapper needs. The steps are go-tpm's, with
// its primitives: parent's labeled encapsulation of a seed, KDFa
// ("STORAGE", name) for the AES-CFB key (zero IV) that encrypts the
// size-prefixed sensitive area, KDFa ("INTEGRITY") for the HMAC key of
// the encrypted area and name; the wrapper is the HMAC, size-prefixed,
// then the encrypted area. It refuses what go-tpm refuses, a parent
// whose symmetric algorithm is not AES in CFB mode, before encapsulating
// anything, and a wrapper too long for the 2-byte size of the TPM2B that
// carries it, which go-tpm would encode modulo 65536
// (TestDuplicateIsTheLibrarys compares both). The seed and the two keys
// derived from it are cleared on return; the AES key schedule and the
// HMAC's pads live inside the standard library's values, out of reach.
func createDuplicate(rand io.Reader, parent tpm2.LabeledEncapsulationKey, name, sensitive []byte) (duplicate, encSecret []byte, err error) {
	sym := parent.SymmetricParameters()
	if sym.Algorithm != tpm2.TPMAlgAES {
		return nil, nil, fmt.Errorf("%w %v", tpm2.ErrUnsupportedCipher, sym.Algorithm)
	}
	mode, err := sym.Mode.AES()
	if err != nil {
		return nil, nil, err
	}
	if *mode != tpm2.TPMAlgCFB {
		return nil, nil, fmt.Errorf("%w %v", tpm2.ErrUnsupportedMode, *mode)
	}
	bits, err := sym.KeyBits.AES()
	if err != nil {
		return nil, nil, err
	}
	hash, err := parent.NameAlg().Hash()
	if err != nil {
		return nil, nil, err
	}
	size := hash.Size()
	if 2+size+2+len(sensitive) > math.MaxUint16 {
		return nil, nil, fmt.Errorf("sensitive area of %d bytes is too large to wrap: a TPM takes at most %d", len(sensitive), math.MaxUint16-4-size)
	}
	seed, encSecret, err := parent.Encapsulate(rand, "DUPLICATE")
	if err != nil {
		return nil, nil, err
	}
	defer clear(seed)
	storageKey := tpm2.KDFa(hash, seed, "STORAGE", name, nil, int(*bits))
	defer clear(storageKey)
	block, err := aes.NewCipher(storageKey)
	if err != nil {
		return nil, nil, err
	}
	// duplicate: size || HMAC || CFB(size || sensitive), encrypted in place.
	duplicate = make([]byte, 2+size+2+len(sensitive))
	binary.BigEndian.PutUint16(duplicate, uint16(size))
	dupSensitive := duplicate[2+size:]
	binary.BigEndian.PutUint16(dupSensitive, uint16(len(sensitive)))
	copy(dupSensitive[2:], sensitive)
	cipher.NewCFBEncrypter(block, make([]byte, block.BlockSize())).XORKeyStream(dupSensitive, dupSensitive)
	integrityKey := tpm2.KDFa(hash, seed, "INTEGRITY", nil, nil, size*8)
	defer clear(integrityKey)
	mac := hmac.New(hash.New, integrityKey)
	mac.Write(dupSensitive)
	mac.Write(name)
	mac.Sum(duplicate[2:2])
	return duplicate, encSecret, nil
}
