package tpm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// MaxPartials caps the points of one Partials call.
const MaxPartials = 256

// Partials computes, inside the TPM, the partial decryption s·R of each
// point R with the scoped key k, and the TPM's proof of each ([Partial],
// [VerifyPartial]). Without an approval the PCRs must hold the key's own
// values and the floor be at most its version; with one (for a key that
// names an approver), the approval's. It fails with ErrPCRMismatch or a
// [DowngradeError] otherwise, and with ErrBadApproval if the TPM does not
// accept the approval.
//
// The gate key loads under the import key in a policy session without
// encryption, which later runs Commit and Sign: a signature is not a
// parameter the TPM can encrypt; each point is blinded first, so what
// crosses the bus is worth nothing without the blind (dleq.go). Both
// objects are loaded once (and imported first in a process's first call,
// [loadKept]) in a second policy session, salted to the loaded gate key
// ([gateSaltedSession]) with command and response encryption; every ZGen
// runs in that session, so its point and its result cross the bus
// encrypted. The gate (PolicyPCR ·
// PolicyNV(floor), and PolicyAuthorize with an approval, then
// PolicyCommandCode(Import or Load) · PolicyOR) runs when the objects load
// under the gate key, and per point the TPM runs PolicyCommandCode ·
// ECDH_ZGen, then PolicyCommandCode · PolicyOR before Commit and before
// Sign. [PartialsBatch] proves many points at once.
func Partials(t transport.TPM, k *ScopedKey, points [][]byte, approval *Approval) ([]Partial, error) {
	if len(points) == 0 || len(points) > MaxPartials {
		return nil, fmt.Errorf("%d points; one call computes 1 to %d partials", len(points), MaxPartials)
	}
	if err := checkPoints(points); err != nil {
		return nil, err
	}
	run, err := k.open(t, approval, true)
	if err != nil {
		return nil, err
	}
	defer run.close()
	out := make([]Partial, len(points))
	for i, r := range points {
		proof, err := run.provedPartial(r)
		if err != nil {
			return nil, err
		}
		out[i] = *proof
	}
	return out, nil
}

// provedPartial is the TPM's partial of a blinded R and its proof, with
// the blind.
func (run *scopedRun) provedPartial(r []byte) (*Partial, error) {
	rho, blinded, err := newBlind(r)
	if err != nil {
		return nil, err
	}
	defer rho.Erase()
	p, err := zgenPoint(run.t, run.sess, run.gate, run.zgen, blinded)
	if err != nil {
		return nil, err
	}
	proof, err := prove(run.t, run.proofSess, run.gate, run.twin, blinded, p)
	if err != nil {
		return nil, err
	}
	proof.Blind = rho.Bytes()
	return proof, nil
}

func checkPoints(points [][]byte) error {
	for i, p := range points {
		if _, err := decodePoints([]string{"point"}, [][]byte{p}); err != nil {
			return fmt.Errorf("point %d: %v", i, err)
		}
	}
	return nil
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

// loadGateKey loads the gate key under the import key, importing it first
// unless an earlier call did ([loadKept]).
func loadGateKey(t transport.TPM, sess tpm2.Session, k *ScopedKey) (*tpm2.LoadResponse, error) {
	pass := func(cc tpm2.TPMCC) error { return passImportPolicy(t, sess, cc) }
	loaded, err := loadKept(t, k.Key.authHandle(sess), &k.gateKey, pass, "the gate key")
	if err != nil && !errors.Is(err, errKeptStale) {
		return nil, diagnose(t, k.Key, err)
	}
	return loaded, err
}

// zgenPoint returns s·R.
func zgenPoint(t transport.TPM, sess tpm2.Session, g *openGate, key *tpm2.LoadResponse, r []byte) ([]byte, error) {
	if err := g.pass(t, sess, roleZGen, tpm2.TPMCCECDHZGen); err != nil {
		return nil, err
	}
	rsp, err := tpm2.ECDHZGen{
		KeyHandle: tpm2.AuthHandle{Handle: key.ObjectHandle, Name: key.Name, Auth: sess},
		InPoint:   tpm2.New2B(tpmPoint(r)),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("ECDH_ZGen: %w", err)
	}
	p, err := fromTPMPoint(rsp.OutPoint)
	if err != nil {
		// The TPM's fault, not the envelope's: the point sent was checked.
		return nil, fmt.Errorf("the TPM's ECDH_ZGen answered a bad point: %w", err)
	}
	return p, nil
}

// prove makes the TPM's Chaum–Pedersen proof that p = s·r (see dleq.go).
func prove(t transport.TPM, sess tpm2.Session, g *openGate, twin *tpm2.LoadResponse, r, p []byte) (*Partial, error) {
	key := tpm2.AuthHandle{Handle: twin.ObjectHandle, Name: twin.Name, Auth: sess}
	if err := g.pass(t, sess, roleTwin, tpm2.TPMCCCommit); err != nil {
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
	if err := g.pass(t, sess, roleTwin, tpm2.TPMCCSign); err != nil {
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

// policyPCR runs PolicyPCR(pcrs) in sess.
func policyPCR(t transport.TPM, sess tpm2.Session, pcrs PCRValues) error {
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
	return nil
}

// openGate is the gate a Partials call goes through: the key's own PCRs
// and version, or an approval's with the TPM's ticket for its signature.
type openGate struct {
	key     *ScopedKey
	pcrs    PCRValues
	version uint64
	ticket  *tpm2.TPMTTKVerified // nil: the key's own PCR branch
	// gateBranches are the gate key's policy branches, computed at the
	// call's first load under it.
	gateBranches *tpm2.TPMLDigest
}

func (k *ScopedKey) openGate(t transport.TPM, a *Approval) (*openGate, error) {
	if a == nil {
		return &openGate{key: k, pcrs: k.PCRs, version: k.Version}, nil
	}
	if err := a.PCRs.Check(); err != nil {
		return nil, err
	}
	if err := CheckSecurityVersion(a.Version); err != nil {
		return nil, err
	}
	ticket, err := approvalTicket(t, k.Approver, a)
	if err != nil {
		return nil, err
	}
	return &openGate{key: k, pcrs: a.PCRs, version: a.Version, ticket: ticket}, nil
}

// pass satisfies, in sess, role's policy for cc: the objects need only
// their command, PolicyCommandCode, then PolicyOR for the twin. Their gate
// was passed when they were loaded ([openGate.passGateKey]).
func (g *openGate) pass(t transport.TPM, sess tpm2.Session, role scopedRole, cc tpm2.TPMCC) error {
	branches, err := objectBranches(role)
	if err != nil {
		return err
	}
	return passCommand(t, sess, cc, branches)
}

// objectBranches are the ZGen key's and the twin's policy branches, the
// same for every scoped key: computed once, not at every envelope.
func objectBranches(role scopedRole) (tpm2.TPMLDigest, error) {
	b, err := objectBranchesOnce()
	if err != nil {
		return tpm2.TPMLDigest{}, err
	}
	return b[role], nil
}

var objectBranchesOnce = sync.OnceValues(func() (map[scopedRole]tpm2.TPMLDigest, error) {
	out := map[scopedRole]tpm2.TPMLDigest{}
	for _, role := range []scopedRole{roleZGen, roleTwin} {
		branches, err := policyBranches(role, []gate{{}})
		if err != nil {
			return nil, err
		}
		out[role] = branches
	}
	return out, nil
})

// passCommand runs PolicyCommandCode(cc), then PolicyOR over the policy's
// branches when there are several.
func passCommand(t transport.TPM, sess tpm2.Session, cc tpm2.TPMCC, branches tpm2.TPMLDigest) error {
	if _, err := (tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: cc}).Execute(t); err != nil {
		return fmt.Errorf("PolicyCommandCode: %w", err)
	}
	return policyOr(t, sess, branches)
}

// policyOr runs PolicyOR over branches, if there are several.
func policyOr(t transport.TPM, sess tpm2.Session, branches tpm2.TPMLDigest) error {
	if len(branches.Digests) == 1 {
		return nil
	}
	if _, err := (tpm2.PolicyOr{PolicySession: sess.Handle(), PHashList: branches}).Execute(t); err != nil {
		return fmt.Errorf("PolicyOR: %w", err)
	}
	return nil
}

// passGateKey satisfies, in sess, the gate key's policy for cc (Import or
// Load): the image (PolicyPCR · PolicyNV(floor)) [· PolicyAuthorize] ·
// PolicyCommandCode(cc) · PolicyOR.
func (g *openGate) passGateKey(t transport.TPM, sess tpm2.Session, cc tpm2.TPMCC) error {
	if err := passImage(t, sess, g.pcrs, g.version); err != nil {
		return err
	}
	if g.ticket != nil {
		if err := g.authorize(t, sess); err != nil {
			return err
		}
	}
	if g.gateBranches == nil {
		branches, err := policyBranches(roleGateKey, g.key.gates())
		if err != nil {
			return err
		}
		g.gateBranches = &branches
	}
	return passCommand(t, sess, cc, *g.gateBranches)
}

// loadUnderGateKey loads w under the loaded gate key, importing it first
// unless an earlier call did ([loadKept]); each command passes the gate.
func (g *openGate) loadUnderGateKey(t transport.TPM, sess tpm2.Session, gateKey *tpm2.LoadResponse, w *wrapped) (*tpm2.LoadResponse, error) {
	parent := tpm2.AuthHandle{Handle: gateKey.ObjectHandle, Name: gateKey.Name, Auth: sess}
	pass := func(cc tpm2.TPMCC) error { return g.passGateKey(t, sess, cc) }
	return loadKept(t, parent, w, pass, "a scoped object under its gate key")
}

func (g *openGate) authorize(t transport.TPM, sess tpm2.Session) error {
	approved, err := ImagePolicyDigest(g.pcrs, g.version)
	if err != nil {
		return err
	}
	name, err := approverName(g.key.Approver)
	if err != nil {
		return err
	}
	_, err = tpm2.PolicyAuthorize{
		PolicySession:  sess.Handle(),
		ApprovedPolicy: tpm2.TPM2BDigest{Buffer: approved},
		PolicyRef:      tpm2.TPM2BDigest{Buffer: []byte(approvalRef)},
		KeySign:        name,
		CheckTicket:    *g.ticket,
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("%w: PolicyAuthorize: %v", ErrBadApproval, err)
	}
	return nil
}
