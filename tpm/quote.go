package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Quote is a TPM's signed statement of its PCR values, bound to a nonce.
type Quote struct {
	Attest    []byte `json:"attest"`    // TPMS_ATTEST, as signed
	Signature []byte `json:"signature"` // TPMT_SIGNATURE over SHA-256(Attest)
}

// MaxNonce is the largest nonce a quote carries (TPM2B_DATA of SHA-256).
const MaxNonce = 32

// ErrQuoteMismatch wraps every reason a quote does not verify.
var ErrQuoteMismatch = errors.New("quote does not verify")

// Quote has the TPM sign the given PCRs' current values with nonce. It
// returns the quote and the values, read just before: a PCR extended in
// between makes the pair fail verification rather than lie.
func (k *AK) Quote(indices []int, nonce []byte) (*Quote, PCRValues, error) {
	if len(nonce) == 0 || len(nonce) > MaxNonce {
		return nil, nil, fmt.Errorf("nonce is %d bytes; want 1 to %d", len(nonce), MaxNonce)
	}
	pcrs, err := ReadPCRs(k.t, indices...)
	if err != nil {
		return nil, nil, err
	}
	rsp, err := tpm2.Quote{
		SignHandle:     k.authHandle(),
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		},
		PCRSelect: pcrs.selection(),
	}.Execute(k.t)
	if err != nil {
		return nil, nil, fmt.Errorf("quoting PCRs: %w", err)
	}
	return &Quote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(rsp.Signature)}, pcrs, nil
}

// VerifyQuote checks, offline, that q is a quote by ak over exactly pcrs
// with nonce: the signature, that the TPM generated the structure, the
// nonce, the PCR selection and the PCR digest.
func VerifyQuote(ak *AKPublic, q *Quote, nonce []byte, pcrs PCRValues) error {
	if err := verifyQuote(ak, q, nonce, pcrs); err != nil {
		return fmt.Errorf("%w: %v", ErrQuoteMismatch, err)
	}
	return nil
}

func verifyQuote(ak *AKPublic, q *Quote, nonce []byte, pcrs PCRValues) error {
	if err := verifyECDSA(ak.key, q.Attest, q.Signature); err != nil {
		return err
	}
	attest, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
	if err != nil || !bytes.Equal(tpm2.Marshal(attest), q.Attest) {
		return errors.New("attestation structure does not parse canonically")
	}
	if attest.Magic != tpm2.TPMGeneratedValue || attest.Type != tpm2.TPMSTAttestQuote {
		return errors.New("the signed structure is not a TPM-generated quote")
	}
	if !equalBytes(attest.ExtraData.Buffer, nonce) {
		return errors.New("quote is for another nonce")
	}
	info, err := attest.Attested.Quote()
	if err != nil {
		return err
	}
	if !bytes.Equal(tpm2.Marshal(info.PCRSelect), tpm2.Marshal(pcrs.selection())) {
		return errors.New("quote covers other PCRs")
	}
	if !equalBytes(info.PCRDigest.Buffer, pcrs.digest()) {
		return errors.New("quoted PCR digest does not match the PCR values")
	}
	return nil
}

// verifyECDSA checks a TPMT_SIGNATURE (ECDSA with SHA-256) over msg.
func verifyECDSA(key *ecdsa.PublicKey, msg, sigBytes []byte) error {
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil || !bytes.Equal(tpm2.Marshal(sig), sigBytes) {
		return errors.New("signature does not parse canonically")
	}
	if sig.SigAlg != tpm2.TPMAlgECDSA {
		return errors.New("signature is not ECDSA")
	}
	ecc, err := sig.Signature.ECDSA()
	if err != nil || ecc.Hash != tpm2.TPMAlgSHA256 {
		return errors.New("signature is not ECDSA with SHA-256")
	}
	der, err := asn1Signature(ecc.SignatureR.Buffer, ecc.SignatureS.Buffer)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(key, digest[:], der) {
		return errors.New("bad signature")
	}
	return nil
}

// asn1Signature encodes r and s as the DER SEQUENCE ecdsa.VerifyASN1 takes.
func asn1Signature(r, s []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(c *cryptobyte.Builder) {
		c.AddASN1BigInt(new(big.Int).SetBytes(r))
		c.AddASN1BigInt(new(big.Int).SetBytes(s))
	})
	return b.Bytes()
}
