package tpm

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
)

// ScopedKey is a share kept as a TPM key that computes with it but never
// reveals it: a P-256 ECDH key usable only for TPM2_ECDH_ZGen, and its twin,
// an ECDAA signing key with the same scalar usable only for TPM2_Commit and
// TPM2_Sign (the proofs). Both are wrapped offline, under a gate key
// wrapped for one TPM's import key, and both work only on an approved image: while the PCRs hold the values the
// key was sealed to, or — when the key names an approver — the values of an
// [Approval] the approver signed (PolicyAuthorize), so that an approved
// image update needs no new key.
//
// The TPM refuses one key with both sign and decrypt under an ECDAA scheme,
// hence two objects.
//
// The gate key is a storage key wrapped for the import key whose policy
// is the image gate (PolicyPCR · PolicyNV(floor), or the approval) followed
// by PolicyCommandCode(Import or Load): the objects can be imported and
// loaded under it only on the approved image, and nothing else (not
// TPM2_Rewrap, which would strip their outer wrapper) can use it as a
// parent. The objects' own policies name just their commands, so each use
// costs one policy command. All three are stClear: a saved context of a
// loaded object does not load again after TPM2_Startup(CLEAR), so what was
// loaded on the approved image dies with that boot.
//
// Formats 2 and 3 were wrapped for the EK, whose policy also authorizes
// TPM2_Rewrap; they are refused.
type ScopedKey struct {
	Key  *ImportKey // the import key it was made for
	PCRs PCRValues  // the values it works under without an approval
	// Version is the ceremony image's security version: without an
	// approval the key works only while the floor is at most Version.
	Version uint64
	// Approver, if not nil, is the escrow authority's P-256 key whose
	// approvals of other PCR values the key also accepts.
	Approver *ecdsa.PublicKey

	gateKey    wrapped // the objects' parent
	zgen, twin wrapped
}

// scopedFormat is the scoped key format: 4, the gate key wrapped for the
// import key, its policy naming Import and Load.
const scopedFormat uint8 = 4

// wrapped is an object duplicated for import under a parent.
type wrapped struct {
	public    tpm2.TPMTPublic
	duplicate []byte // TPM2B_PRIVATE contents
	seed      []byte // TPM2B_ENCRYPTED_SECRET contents
}

// SealScoped wraps the share scalar (32 bytes, big-endian) for the TPM
// holding key, usable only while its PCRs hold pcrs and its floor is at
// most version (or under an approval). It runs offline.
func SealScoped(key *ImportKey, pcrs PCRValues, version uint64, share []byte, approver *ecdsa.PublicKey) (*ScopedKey, error) {
	priv, err := ecdh.P256().NewPrivateKey(share)
	if err != nil {
		return nil, fmt.Errorf("a share is a nonzero P-256 scalar of 32 bytes: %w", err)
	}
	if err := pcrs.Check(); err != nil {
		return nil, err
	}
	if err := CheckSecurityVersion(version); err != nil {
		return nil, err
	}
	if approver != nil && approver.Curve != elliptic.P256() {
		return nil, errors.New("the approver's key is not P-256")
	}
	k := &ScopedKey{Key: key, PCRs: pcrs.Clone(), Version: version, Approver: approver}
	w, err := newGateKey(key, k.gates())
	if err != nil {
		return nil, err
	}
	k.gateKey = *w
	parent, err := tpm2.ImportEncapsulationKey(&k.gateKey.public)
	if err != nil {
		return nil, fmt.Errorf("the gate key cannot wrap imports: %w", err)
	}
	for _, role := range []scopedRole{roleZGen, roleTwin} {
		public, err := k.objectPublic(role, priv.PublicKey().Bytes())
		if err != nil {
			return nil, err
		}
		w, err := wrap(parent, public, scopedSensitive(share))
		if err != nil {
			return nil, err
		}
		*k.object(role) = *w
	}
	return k, nil
}

func scopedSensitive(share []byte) tpm2.TPMTSensitive {
	return tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgECC,
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: share}),
	}
}

// newGateKey makes the gate key of a scoped key: a P-256 storage key,
// fresh for each scoped key (its private part lives only here and in the
// TPM), wrapped for key.
func newGateKey(key *ImportKey, gates []gate) (*wrapped, error) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	public, err := gateKeyPublic(gates, priv.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	encap, err := key.encapsulation()
	if err != nil {
		return nil, err
	}
	return wrap(encap, public, tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgECC,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: priv.Bytes()}),
	})
}

// gateKeyPublic is the gate key's public area: a restricted decryption
// (storage) key whose policy has one branch per gate and command, image
// gate · PolicyCommandCode(Import or Load), joined by PolicyOR. Every
// branch names a command: TPM2_Rewrap with the gate key as the old parent
// would hand out its children's sensitive areas, and TPM2_Duplicate or
// TPM2_ObjectChangeAuth would give it another wrapper or a password.
func gateKeyPublic(gates []gate, point []byte) (tpm2.TPMTPublic, error) {
	policy, err := scopedPolicy(roleGateKey, gates)
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	attrs := tpm2.TPMAObject{Restricted: true, Decrypt: true, AdminWithPolicy: true, NoDA: true, STClear: true}
	public := p256Public(attrs, tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, policy, point)
	ecc, _ := public.Parameters.ECCDetail()
	ecc.Symmetric = tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	public.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, ecc)
	return public, nil
}

// wrap duplicates an object for import under parent (an import key or a
// gate key).
func wrap(parent tpm2.LabeledEncapsulationKey, public tpm2.TPMTPublic, sensitive tpm2.TPMTSensitive) (*wrapped, error) {
	name, err := tpm2.ObjectName(&public)
	if err != nil {
		return nil, err
	}
	inner := tpm2.Marshal(sensitive)
	defer clear(inner)
	duplicate, seed, err := createDuplicate(rand.Reader, parent, name.Buffer, inner)
	if err != nil {
		return nil, fmt.Errorf("wrapping for the parent key: %w", err)
	}
	return &wrapped{public: public, duplicate: duplicate, seed: seed}, nil
}

type scopedRole int

const (
	roleZGen scopedRole = iota
	roleTwin
	roleGateKey
)

// objects are the wrapped objects in encoding order.
func (k *ScopedKey) objects() []*wrapped {
	return []*wrapped{&k.gateKey, &k.zgen, &k.twin}
}

func (k *ScopedKey) object(r scopedRole) *wrapped {
	if r == roleZGen {
		return &k.zgen
	}
	return &k.twin
}

// PublicKey is the share's public value s·G, uncompressed.
func (k *ScopedKey) PublicKey() []byte {
	ecc, _ := k.zgen.public.Unique.ECC()
	out, _ := uncompressed(ecc.X.Buffer, ecc.Y.Buffer)
	return out
}

// objectPublic is the exact public area of role. Imported objects cannot
// be fixedTPM or fixedParent; userWithAuth is clear, so no password
// works, and the policy names only the role's commands (PolicyCommandCode,
// joined by PolicyOR for the twin), so the ZGen key does nothing but ZGen
// and the twin nothing but Commit and Sign — not even TPM2_Duplicate,
// whose policy would need its own command code. The gate is its parent's.
func (k *ScopedKey) objectPublic(role scopedRole, point []byte) (tpm2.TPMTPublic, error) {
	policy, err := scopedPolicy(role, []gate{{}})
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	return rolePublic(role, policy, point), nil
}

func rolePublic(role scopedRole, policy []byte, point []byte) tpm2.TPMTPublic {
	attrs := tpm2.TPMAObject{AdminWithPolicy: true, NoDA: true, STClear: true}
	scheme := tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}
	if role == roleZGen {
		attrs.Decrypt = true
	} else {
		attrs.SignEncrypt = true
		scheme = tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDAA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDAA, &tpm2.TPMSSchemeECDAA{HashAlg: tpm2.TPMAlgSHA256}),
		}
	}
	return p256Public(attrs, scheme, policy, point)
}

// p256Public is the public area of a P-256 key with SHA-256 names, no
// symmetric part and no KDF: the scoped objects and the approver.
func p256Public(attrs tpm2.TPMAObject, scheme tpm2.TPMTECCScheme, policy, point []byte) tpm2.TPMTPublic {
	unique := tpmPoint(point)
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgECC,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		AuthPolicy:       tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    scheme,
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &unique),
	}
}

// A gate is how a policy branch checks the image: PolicyPCR of fixed
// values and the floor term of a fixed version, or PolicyAuthorize by the
// approver (which then requires PolicyPCR and the floor term of values it
// signed).
type gate struct {
	pcrs     PCRValues        // PolicyPCR of these values · PolicyNV(floor <= version), or
	version  uint64           //
	approver *ecdsa.PublicKey // PolicyAuthorize by this key; neither: no image term
}

// gates are the key's ways in: its PCRs and version, and its approver if any.
func (k *ScopedKey) gates() []gate {
	gs := []gate{{pcrs: k.PCRs, version: k.Version}}
	if k.Approver != nil {
		gs = append(gs, gate{approver: k.Approver})
	}
	return gs
}

// commands are what each role may run.
func (r scopedRole) commands() []tpm2.TPMCC {
	switch r {
	case roleZGen:
		return []tpm2.TPMCC{tpm2.TPMCCECDHZGen}
	case roleGateKey:
		return []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCLoad}
	}
	return []tpm2.TPMCC{tpm2.TPMCCCommit, tpm2.TPMCCSign}
}

// scopedPolicy is the role's authPolicy: one branch per gate and command
// (gate · PolicyCommandCode), joined by PolicyOR when there are several.
func scopedPolicy(role scopedRole, gates []gate) ([]byte, error) {
	branches, err := policyBranches(role, gates)
	if err != nil {
		return nil, err
	}
	return orOf(branches)
}

// orOf is the one branch, or PolicyOR of several.
func orOf(branches tpm2.TPMLDigest) ([]byte, error) {
	if len(branches.Digests) == 1 {
		return branches.Digests[0].Buffer, nil
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyOr{PHashList: branches}).Update(calc); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

// policyBranches are the branches of role's policy for gates, in
// scopedPolicy's order.
func policyBranches(role scopedRole, gates []gate) (tpm2.TPMLDigest, error) {
	var list tpm2.TPMLDigest
	for _, g := range gates {
		for _, cc := range role.commands() {
			d, err := g.policy(&cc)
			if err != nil {
				return list, err
			}
			list.Digests = append(list.Digests, tpm2.TPM2BDigest{Buffer: d})
		}
	}
	return list, nil
}

// policy is the digest of the branch gate · PolicyCommandCode(cc), or of
// the gate alone for no cc.
func (g gate) policy(cc *tpm2.TPMCC) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if g.approver != nil {
		name, err := approverName(g.approver)
		if err != nil {
			return nil, err
		}
		err = tpm2.PolicyAuthorize{KeySign: name, PolicyRef: tpm2.TPM2BDigest{Buffer: []byte(approvalRef)}}.Update(calc)
		if err != nil {
			return nil, err
		}
	} else if g.pcrs != nil {
		if err := g.pcrs.Check(); err != nil {
			return nil, err
		}
		if err := CheckSecurityVersion(g.version); err != nil {
			return nil, err
		}
		if err := imageSteps(calc, g.pcrs, g.version); err != nil {
			return nil, err
		}
	}
	if cc != nil {
		if err := (tpm2.PolicyCommandCode{Code: *cc}).Update(calc); err != nil {
			return nil, err
		}
	}
	return calc.Hash().Digest, nil
}

// The scoped key encoding, big-endian, one canonical form:
//
//	magic      "CUSTSCOP" (8 bytes), version 4 (1 byte)
//	key, pcrs, as in a Blob (key: the import key)
//	security
//	approver   uint16 length + SubjectPublicKeyInfo DER, or length 0
//	then for the gate key (wrapped for the import key), and for the ZGen
//	key and then its twin (wrapped for the gate key):
//	public     uint16 length + TPMT_PUBLIC
//	duplicate  uint16 length + TPM2B_PRIVATE contents
//	seed       uint16 length + TPM2B_ENCRYPTED_SECRET contents
const scopedMagic = "CUSTSCOP"

// Marshal encodes the key.
func (k *ScopedKey) Marshal() []byte {
	out := cryptobyte.NewBuilder(appendHeader(nil, scopedMagic, scopedFormat, k.Key, k.PCRs, k.Version))
	out.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) {
		if k.Approver != nil {
			der, err := x509.MarshalPKIXPublicKey(k.Approver)
			if err != nil {
				c.SetError(err)
			}
			c.AddBytes(der)
		}
	})
	for _, w := range k.objects() {
		for _, field := range [][]byte{tpm2.Marshal(w.public), w.duplicate, w.seed} {
			out.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes(field) })
		}
	}
	return out.BytesOrPanic()
}

// ParseScopedKey decodes and checks a scoped key: canonical encoding, a
// template import key, a usable PCR policy, a gate key and two objects that are exactly what
// SealScoped makes for that policy, with the same public point.
//
// A key already parsed in this process is not checked again: the checks
// are a function of the bytes alone, and a device parses the same
// bundle's key at every release.
func ParseScopedKey(data []byte) (*ScopedKey, error) {
	k, err := parsedScoped.parse(data, parseScopedKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedBlob, err)
	}
	return k.clone(), nil
}

// parsedScoped holds the scoped keys this process parsed and checked.
var parsedScoped = newParsed[*ScopedKey]()

// clone is a copy of k whose exported fields the caller may change
// without changing k. The import key and the wrapped objects, which
// nothing changes, are shared.
func (k *ScopedKey) clone() *ScopedKey {
	c := *k
	c.PCRs = k.PCRs.Clone()
	if k.Approver != nil {
		c.Approver = &ecdsa.PublicKey{Curve: k.Approver.Curve, X: new(big.Int).Set(k.Approver.X), Y: new(big.Int).Set(k.Approver.Y)}
	}
	return &c
}

func parseScopedKey(data []byte) (*ScopedKey, error) {
	s := cryptobyte.String(data)
	key, pcrs, version, _, err := readHeader(&s, scopedMagic, "a scoped key", scopedFormat)
	if err != nil {
		return nil, err
	}
	approver, err := readApprover(&s)
	if err != nil {
		return nil, err
	}
	k := &ScopedKey{Key: key, PCRs: pcrs, Version: version, Approver: approver}
	for _, into := range k.objects() {
		w, err := readWrapped(&s)
		if err != nil {
			return nil, err
		}
		*into = *w
	}
	if !s.Empty() {
		return nil, errors.New("trailing data")
	}
	return k, k.checkObjects()
}

func readApprover(s *cryptobyte.String) (*ecdsa.PublicKey, error) {
	var der cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&der) || len(der) > maxEKDER {
		return nil, errors.New("truncated or oversized approver key")
	}
	if len(der) == 0 {
		return nil, nil
	}
	key, err := ParseApprover(der)
	if err != nil {
		return nil, err
	}
	if canonical, _ := x509.MarshalPKIXPublicKey(key); !bytes.Equal(canonical, der) {
		return nil, errors.New("approver key is not canonically encoded")
	}
	return key, nil
}

func readWrapped(s *cryptobyte.String) (*wrapped, error) {
	var public, duplicate, seed cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&public) || !s.ReadUint16LengthPrefixed(&duplicate) ||
		!s.ReadUint16LengthPrefixed(&seed) {
		return nil, errors.New("truncated")
	}
	if len(public) > maxTPMField || len(duplicate) > maxTPMField || len(seed) > maxTPMField ||
		len(duplicate) == 0 || len(seed) == 0 {
		return nil, errors.New("a TPM field is empty or too long")
	}
	obj, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil || !bytes.Equal(tpm2.Marshal(obj), public) {
		return nil, errors.New("public area does not parse canonically")
	}
	return &wrapped{public: *obj, duplicate: duplicate, seed: seed}, nil
}

// checkObjects refuses objects that could be used with a password, without
// the PCR policy, for other commands, or that hold different keys.
func (k *ScopedKey) checkObjects() error {
	ecc, err := k.zgen.public.Unique.ECC()
	if err != nil {
		return errors.New("the ZGen object is not an ECC key")
	}
	point, err := uncompressed(ecc.X.Buffer, ecc.Y.Buffer)
	if err != nil {
		return fmt.Errorf("the ZGen key's public point: %v", err)
	}
	if err := k.checkGateKey(); err != nil {
		return err
	}
	for _, role := range []scopedRole{roleZGen, roleTwin} {
		want, err := k.objectPublic(role, point)
		if err != nil {
			return err
		}
		if !bytes.Equal(tpm2.Marshal(want), tpm2.Marshal(k.object(role).public)) {
			return errors.New("a scoped object is not the policy-only key SealScoped makes for these PCRs")
		}
	}
	return nil
}

// checkGateKey refuses a gate key that is not exactly the storage key
// SealScoped makes for the key's gates, whatever its point.
func (k *ScopedKey) checkGateKey() error {
	ecc, err := k.gateKey.public.Unique.ECC()
	if err != nil {
		return errors.New("the gate key is not an ECC key")
	}
	point, err := uncompressed(ecc.X.Buffer, ecc.Y.Buffer)
	if err != nil {
		return fmt.Errorf("the gate key's public point: %v", err)
	}
	want, err := gateKeyPublic(k.gates(), point)
	if err != nil {
		return err
	}
	if !bytes.Equal(tpm2.Marshal(want), tpm2.Marshal(k.gateKey.public)) {
		return errors.New("the gate key is not the policy-only storage key SealScoped makes for these PCRs")
	}
	return nil
}
