package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// LoadScopedObject loads one object of a scoped key (the twin if twin is
// set) the way Partials does, for tests that try to misuse it. The caller
// flushes the handle.
func LoadScopedObject(t transport.TPM, k *ScopedKey, twin bool) (*tpm2.LoadResponse, error) {
	run, err := k.open(t, nil, true)
	if err != nil {
		return nil, err
	}
	defer run.close()
	keep := run.zgen
	if twin {
		keep = run.twin
	}
	run.loaded = slices.DeleteFunc(run.loaded, func(h tpm2.TPMHandle) bool { return h == keep.ObjectHandle })
	return keep, nil
}

// GateKeyName is the Name of k's gate key, computed from its public area.
func GateKeyName(k *ScopedKey) []byte {
	name, err := tpm2.ObjectName(&k.gateKey.public)
	if err != nil {
		panic(err)
	}
	return name.Buffer
}

// PolicyPCRCommand satisfies PolicyPCR(pcrs) · PolicyNV(floor <= version)
// · PolicyCommandCode(cc).
func PolicyPCRCommand(t transport.TPM, sess tpm2.Session, pcrs PCRValues, version uint64, cc tpm2.TPMCC) error {
	if err := passImage(t, sess, pcrs, version); err != nil {
		return err
	}
	_, err := tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: cc}.Execute(t)
	return err
}

// PolicyFloor runs the floor term for version in sess.
func PolicyFloor(t transport.TPM, sess tpm2.Session, version uint64) error {
	return checkFloor(t, sess, version)
}

// DefineAnchorOnly and WriteAnchorUnlocked leave the anchor where an
// interrupted Anchor would: defined, or written and not locked.
func DefineAnchorOnly(t transport.TPM) error { return defineAnchor(t) }

func WriteAnchorUnlocked(t transport.TPM, digest []byte) error {
	if err := defineAnchor(t); err != nil {
		return err
	}
	name, err := anchorName(anchorDefined)
	if err != nil {
		return err
	}
	return writeAnchor(t, name, digest)
}

// AnchorTemplate is the anchor's public area before its first write.
func AnchorTemplate() tpm2.TPMSNVPublic { return anchorTemplate }

// ProofEquations reports which equations of p's proof hold: the key
// equation S·B = L + c·K and the point equation S·R' = E + c·P.
func ProofEquations(proofKey, r []byte, p *Partial) (key, point bool, err error) {
	eq, err := checkProof(proofKey, r, p)
	if err != nil {
		return false, false, err
	}
	return eq.keyHolds, eq.pointHolds, nil
}

// ProofChallenge is the challenge c of a proof with these values and no
// blind, for tests that forge proofs.
func ProofChallenge(nonceK, proofKey, r, point, e, l []byte) []byte {
	return challenge(nonceK, proofDigest(proofKey, r, point, e, l)).Bytes()
}

// ZGenFloor loads k as PartialsBatch does, then runs for each point only
// what an envelope cannot do without: the key's per-use policy and
// ECDH_ZGen (no blind, no proof). It returns the time of that loop.
func ZGenFloor(t transport.TPM, k *ScopedKey, points [][]byte) (time.Duration, error) {
	run, err := k.open(t, nil, true)
	if err != nil {
		return 0, err
	}
	defer run.close()
	start := time.Now()
	for _, r := range points {
		if _, err := zgenPoint(t, run.sess, run.gate, run.zgen, r); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// LoadGateKey loads the gate key of a scoped key under the import key,
// for tests that try to misuse it. The caller flushes the handle.
func LoadGateKey(t transport.TPM, k *ScopedKey) (*tpm2.LoadResponse, error) {
	sess, closeSession, err := saltedSession(t, k.Key)
	if err != nil {
		return nil, err
	}
	defer closeSession()
	return loadGateKey(t, sess, k)
}

// PassImage satisfies PolicyPCR(pcrs) · PolicyNV(floor <= version) in
// sess: a gate key's image term, without the command.
func PassImage(t transport.TPM, sess tpm2.Session, pcrs PCRValues, version uint64) error {
	return passImage(t, sess, pcrs, version)
}

// ImportKeyHandle is where the TPM keeps k.
func ImportKeyHandle(k *ImportKey) tpm2.TPMHandle { return k.kind.importHandle() }

// LoadUnderImportKey imports and loads a duplicate made for k, in a
// fresh unsalted policy session, as the appliance does.
func LoadUnderImportKey(conn transport.TPM, k *ImportKey, pub tpm2.TPMTPublic, dup, seed []byte) (*tpm2.LoadResponse, error) {
	sess, closeSession, err := tpm2.PolicySession(conn, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, err
	}
	defer closeSession()
	return loadUnderImportKey(conn, sess, k, &wrapped{public: pub, duplicate: dup, seed: seed})
}

// PassImportPolicy satisfies the import key's policy for cc in sess.
func PassImportPolicy(conn transport.TPM, sess tpm2.Session, cc tpm2.TPMCC) error {
	return passImportPolicy(conn, sess, cc)
}

// WrappedOf returns the public area, duplicate and encrypted seed of a
// sealed blob's object, for tests that hand them to the TPM themselves.
func WrappedOf(b *Blob) (tpm2.TPMTPublic, []byte, []byte) {
	return b.public, b.duplicate, b.seed
}

// ScopedWrapped returns the gate key's and the ZGen object's public
// areas, duplicates and seeds of a scoped key (copies: parsed keys share
// them).
func ScopedWrapped(k *ScopedKey) (gatePub tpm2.TPMTPublic, gateDup, gateSeed []byte, zgenPub tpm2.TPMTPublic, zgenDup, zgenSeed []byte) {
	c := bytes.Clone
	return k.gateKey.public, c(k.gateKey.duplicate), c(k.gateKey.seed), k.zgen.public, c(k.zgen.duplicate), c(k.zgen.seed)
}

// WrapFor duplicates an object of public area pub and sensitive area
// sens for import under parent, as the ceremony does.
func WrapFor(parent *tpm2.TPMTPublic, pub tpm2.TPMTPublic, sens tpm2.TPMTSensitive) (dup, seed []byte, err error) {
	encap, err := tpm2.ImportEncapsulationKey(parent)
	if err != nil {
		return nil, nil, err
	}
	w, err := wrap(encap, pub, sens)
	if err != nil {
		return nil, nil, err
	}
	return w.duplicate, w.seed, nil
}

// PassGateKeyOr runs the PolicyOR of k's gate key over its branches for
// its own PCRs, after the caller ran the image term and a command code.
func PassGateKeyOr(t transport.TPM, sess tpm2.Session, k *ScopedKey) error {
	branches, err := policyBranches(roleGateKey, k.gates())
	if err != nil {
		return err
	}
	return policyOr(t, sess, branches)
}

// NewAKPublicForTest places a P-256 key in the AK template, for tests
// that verify against an AK no TPM holds.
func NewAKPublicForTest(k *ecdsa.PublicKey) (*AKPublic, error) {
	e, err := k.ECDH()
	if err != nil {
		return nil, err
	}
	pub := akTemplate
	unique := tpmPoint(e.Bytes())
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &unique)
	return ParseAKPublic(tpm2.Marshal(pub))
}

// SpoilKept replaces every kept private part with one that no TPM loads,
// as if the TPM behind the transport had changed.
func SpoilKept() {
	for _, k := range kept.Keys() {
		kept.Add(k, tpm2.TPM2BPrivate{Buffer: []byte("not a private part")})
	}
}
