package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// MaxPartials caps the points of one Partials call.
const MaxPartials = 256

// Partials computes, inside the TPM, the partial decryption s·R of each
// point R with the scoped key k, and the TPM's proof of each ([Partial],
// [VerifyPartial]). It fails with ErrPCRMismatch unless the PCRs hold the
// key's values.
//
// Both objects are imported and loaded once, in a policy session salted to
// the EK with response encryption; every ZGen runs in that session, so its
// result crosses the bus encrypted. Commit and Sign run in a second policy
// session without encryption: a signature is not a parameter the TPM can
// encrypt, and neither output is secret. Per point: PolicyPCR ·
// PolicyCommandCode · ECDH_ZGen, then (PolicyPCR · PolicyCommandCode ·
// PolicyOR) before Commit and before Sign.
func Partials(t transport.TPM, k *ScopedKey, points [][]byte) ([]Partial, error) {
	if len(points) == 0 || len(points) > MaxPartials {
		return nil, fmt.Errorf("%d points; one call computes 1 to %d partials", len(points), MaxPartials)
	}
	if _, err := decodeAll(points); err != nil {
		return nil, err
	}
	sess, closeSession, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(k.EK.handle(), k.EK.public),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, diagnose(t, k.EK, fmt.Errorf("starting a session salted to the endorsement key: %w", err))
	}
	defer closeSession()
	zgen, err := loadScoped(t, sess, k, &k.zgen)
	if err != nil {
		return nil, err
	}
	defer flush(t, zgen.ObjectHandle)
	twin, err := loadScoped(t, sess, k, &k.twin)
	if err != nil {
		return nil, err
	}
	defer flush(t, twin.ObjectHandle)
	proofSess, closeProof, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, fmt.Errorf("starting the proof session: %w", err)
	}
	defer closeProof()

	out := make([]Partial, len(points))
	for i, r := range points {
		p, err := zgenPoint(t, sess, k.PCRs, zgen, r)
		if err != nil {
			return nil, err
		}
		proof, err := prove(t, proofSess, k.PCRs, twin, r, p)
		if err != nil {
			return nil, err
		}
		out[i] = *proof
	}
	return out, nil
}

func decodeAll(points [][]byte) ([]tpm2.TPMSECCPoint, error) {
	out := make([]tpm2.TPMSECCPoint, len(points))
	for i, p := range points {
		if _, err := decodePoints(map[string][]byte{"point": p}); err != nil {
			return nil, fmt.Errorf("point %d: %v", i, err)
		}
		out[i] = tpmPoint(p)
	}
	return out, nil
}

func tpmPoint(p []byte) tpm2.TPMSECCPoint {
	return tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: p[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: p[33:65]}}
}

func fromTPMPoint(b tpm2.TPM2BECCPoint) ([]byte, error) {
	p, err := b.Contents()
	if err != nil {
		return nil, err
	}
	return uncompressed(p.X.Buffer, p.Y.Buffer)
}

func loadScoped(t transport.TPM, sess tpm2.Session, k *ScopedKey, w *wrapped) (*tpm2.LoadResponse, error) {
	private, err := importWrapped(t, sess, k.EK, w)
	if err != nil {
		return nil, diagnose(t, k.EK, err)
	}
	return loadImported(t, sess, k.EK, w, private)
}

// zgenPoint returns s·R.
func zgenPoint(t transport.TPM, sess tpm2.Session, pcrs PCRValues, key *tpm2.LoadResponse, r []byte) ([]byte, error) {
	if err := pcrCommandSession(t, sess, pcrs, tpm2.TPMCCECDHZGen); err != nil {
		return nil, err
	}
	rsp, err := tpm2.ECDHZGen{
		KeyHandle: tpm2.AuthHandle{Handle: key.ObjectHandle, Name: key.Name, Auth: sess},
		InPoint:   tpm2.New2B(tpmPoint(r)),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("ECDH_ZGen: %w", err)
	}
	return fromTPMPoint(rsp.OutPoint)
}

// prove makes the TPM's Chaum–Pedersen proof that p = s·r (see dleq.go).
func prove(t transport.TPM, sess tpm2.Session, pcrs PCRValues, twin *tpm2.LoadResponse, r, p []byte) (*Partial, error) {
	key := tpm2.AuthHandle{Handle: twin.ObjectHandle, Name: twin.Name, Auth: sess}
	if err := twinSession(t, sess, pcrs, tpm2.TPMCCCommit); err != nil {
		return nil, err
	}
	base := baseOnce()
	c, err := tpm2.Commit{
		SignHandle: key,
		P1:         tpm2.New2B(tpmPoint(r)),
		S2:         tpm2.TPM2BSensitiveData{Buffer: base.s2},
		Y2:         tpm2.TPM2BECCParameter{Buffer: base.y},
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("TPM2_Commit: %w", err)
	}
	pts := make([][]byte, 3)
	for i, b := range []tpm2.TPM2BECCPoint{c.K, c.L, c.E} {
		if pts[i], err = fromTPMPoint(b); err != nil {
			return nil, fmt.Errorf("TPM2_Commit returned a bad point: %w", err)
		}
	}
	k, l, e := pts[0], pts[1], pts[2]
	if err := twinSession(t, sess, pcrs, tpm2.TPMCCSign); err != nil {
		return nil, err
	}
	sig, err := tpm2.Sign{
		KeyHandle: key,
		Digest:    tpm2.TPM2BDigest{Buffer: proofDigest(k, r, p, e, l)},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDAA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDAA, &tpm2.TPMSSchemeECDAA{HashAlg: tpm2.TPMAlgSHA256, Count: c.Counter}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("TPM2_Sign (ECDAA): %w", err)
	}
	ecc, err := sig.Signature.Signature.ECDAA()
	if err != nil {
		return nil, fmt.Errorf("TPM2_Sign returned no ECDAA signature: %w", err)
	}
	s := make([]byte, 32)
	if len(ecc.SignatureS.Buffer) > 32 {
		return nil, errors.New("TPM2_Sign returned an oversized S")
	}
	copy(s[32-len(ecc.SignatureS.Buffer):], ecc.SignatureS.Buffer)
	return &Partial{Point: p, E: e, L: l, NonceK: ecc.SignatureR.Buffer, S: s}, nil
}

// pcrCommandSession satisfies PolicyPCR · PolicyCommandCode(cc) in sess.
func pcrCommandSession(t transport.TPM, sess tpm2.Session, pcrs PCRValues, cc tpm2.TPMCC) error {
	_, err := tpm2.PolicyPCR{
		PolicySession: sess.Handle(),
		PcrDigest:     tpm2.TPM2BDigest{Buffer: pcrs.digest()},
		Pcrs:          pcrs.selection(),
	}.Execute(t)
	if errors.Is(err, tpm2.TPMRCValue) {
		return ErrPCRMismatch
	}
	if err != nil {
		return fmt.Errorf("checking PCRs: %w", err)
	}
	if _, err := (tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: cc}).Execute(t); err != nil {
		return fmt.Errorf("PolicyCommandCode: %w", err)
	}
	return nil
}

// twinSession satisfies one branch of the twin's PolicyOR.
func twinSession(t transport.TPM, sess tpm2.Session, pcrs PCRValues, cc tpm2.TPMCC) error {
	if err := pcrCommandSession(t, sess, pcrs, cc); err != nil {
		return err
	}
	branches, err := twinBranches(pcrs)
	if err != nil {
		return err
	}
	if _, err := (tpm2.PolicyOr{PolicySession: sess.Handle(), PHashList: branches}).Execute(t); err != nil {
		return fmt.Errorf("PolicyOR: %w", err)
	}
	return nil
}
