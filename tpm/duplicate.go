package tpm

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
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
// RSA-OAEP encryption every wrapper needs. The steps are go-tpm's:
// parent's labeled encapsulation of a seed, KDFa ("STORAGE", name) for
// the AES-CFB key (zero IV) that encrypts the size-prefixed sensitive
// area, KDFa ("INTEGRITY") for the HMAC key of the encrypted area and
// name; the wrapper is the HMAC, size-prefixed, then the encrypted area.
// KDFa, the HMAC and CFB are this file's (kdfa, appendHMAC, encryptCFB),
// without the allocations of go-tpm's and the standard library's. It
// refuses what go-tpm refuses, a parent whose symmetric algorithm is not
// AES in CFB mode, before encapsulating anything, and a wrapper too long
// for the 2-byte size of the TPM2B that carries it, which go-tpm would
// encode modulo 65536 (TestDuplicateIsTheLibrarys compares both). The
// seed, the two keys derived from it, the padded HMAC keys and the key
// stream are cleared on return; the AES key schedule lives inside the
// standard library's value, out of reach.
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
	storageKey := kdfa(hash, seed, "STORAGE", name, int(*bits))
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
	encryptCFB(block, dupSensitive)
	integrityKey := kdfa(hash, seed, "INTEGRITY", nil, size*8)
	defer clear(integrityKey)
	appendHMAC(duplicate[2:2], hash, integrityKey, dupSensitive, name)
	return duplicate, encSecret, nil
}

// encryptCFB encrypts data in place in CFB mode with a zero IV, as
// cipher.NewCFBEncrypter's stream does (go-tpm's way): each block is
// XORed with the encryption of the ciphertext block before it, the first
// with the encryption of the IV. The standard library's stream, which it
// marks deprecated, takes three allocations and XORs a byte at a time.
func encryptCFB(block cipher.Block, data []byte) {
	size := block.BlockSize()
	stream := make([]byte, size) // the IV, then each block's key stream
	for at := 0; at < len(data); at += size {
		if at == 0 {
			block.Encrypt(stream, stream)
		} else {
			block.Encrypt(stream, data[at-size:at])
		}
		subtle.XORBytes(data[at:], data[at:], stream)
	}
	clear(stream) // the last key stream block is that block's plaintext XOR its ciphertext
}

// kdfa is tpm2.KDFa(hash, key, label, contextU, nil, bits): SP 800-108
// counter mode with HMAC (TPM 2.0 Part 1, "KDFa"), each block
// HMAC(key, counter || label || 0 || contextU || bits)
// (TestKDFaIsTheLibrarys holds the two to the same bytes).
func kdfa(hash crypto.Hash, key []byte, label string, contextU []byte, bits int) []byte {
	n := (bits + 7) / 8
	// in: a 4-byte counter, then the rest of each block's input.
	var buf [64]byte // holds it for a wrapper's labels and Names
	in := append(buf[:4], label...)
	in = append(in, 0) // the label as a C string
	in = binary.BigEndian.AppendUint32(append(in, contextU...), uint32(bits))
	out := make([]byte, 0, n+hash.Size())
	for counter := uint32(1); len(out) < n; counter++ {
		binary.BigEndian.PutUint32(in, counter)
		out = appendHMAC(out, hash, key, in)
	}
	if bits%8 != 0 { // unused high bits of the first byte are zero
		out[0] &= 1<<(bits%8) - 1
	}
	clear(out[n:])
	return out[:n]
}

// appendHMAC appends HMAC(key, the parts concatenated) under hash to dst.
// A wrapper takes three MACs (two for KDFa, one over the encrypted area
// and Name), and crypto/hmac's allocations and bookkeeping cost more than
// their hashing; so SHA-256, the nameAlg of every parent here (the import
// key and the gate key), goes through hmacSHA256. The parts are copied
// into one message for crypto/hmac, so that a caller's buffers stay on
// its stack (TestHMACIsTheLibrarys holds both ways to crypto/hmac).
func appendHMAC(dst []byte, hash crypto.Hash, key []byte, parts ...[]byte) []byte {
	if hash == crypto.SHA256 {
		mac := hmacSHA256(key, parts...)
		return append(dst, mac[:]...)
	}
	var msg []byte
	for _, part := range parts {
		msg = append(msg, part...)
	}
	mac := hmac.New(hash.New, key)
	mac.Write(msg)
	return mac.Sum(dst)
}

// hmacSHA256 is HMAC-SHA256 (RFC 2104): SHA-256((K ^ opad) ||
// SHA-256((K ^ ipad) || message)), K the key zero-padded to a block (or,
// if longer, its SHA-256). Each hash runs over one buffer, on the stack
// unless the message is too long for it, cleared before returning.
func hmacSHA256(key []byte, parts ...[]byte) [sha256.Size]byte {
	if len(key) > sha256.BlockSize {
		digest := sha256.Sum256(key)
		key = digest[:]
	}
	var k [sha256.BlockSize]byte
	copy(k[:], key)
	size := sha256.BlockSize
	for _, part := range parts {
		size += len(part)
	}
	var buf [256]byte
	in := buf[:sha256.BlockSize]
	if size > len(buf) {
		in = make([]byte, sha256.BlockSize, size)
	}
	for i, b := range k {
		in[i] = b ^ 0x36
	}
	for _, part := range parts {
		in = append(in, part...)
	}
	inner := sha256.Sum256(in)
	in = in[:sha256.BlockSize]
	for i, b := range k {
		in[i] = b ^ 0x5c
	}
	mac := sha256.Sum256(append(in, inner[:]...))
	clear(k[:])
	clear(inner[:])
	clear(in[:cap(in)])
	return mac
}
