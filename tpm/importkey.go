package tpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Persistent handles of the import keys, in the endorsement range of the
// TCG handle registry, next to the EKs.
const (
	RSAImportKeyHandle tpm2.TPMHandle = 0x81010020
	ECCImportKeyHandle tpm2.TPMHandle = 0x81010021
)

// ImportKey is the key a device's secrets are wrapped for: a primary key
// of the endorsement hierarchy (so, like the EK, it survives TPM2_Clear
// and is the same key for the same template on the same TPM) with the
// EK's algorithms, but whose policy authorizes only TPM2_Import and
// TPM2_Load under it, and TPM2_Certify of it by the AK at enrollment.
//
// The EK itself must not be a parent of anything secret: its policy is
// PolicySecret(endorsement), and the endorsement authorization is empty
// (and whoever boots their own image can reset it with TPM2_Clear), so
// TPM2_Rewrap(EK → TPM_RH_NULL) strips the outer wrapper of a duplicate
// and hands out its sensitive area, without the object's own policy. The
// import key's policy fails TPM2_Rewrap, TPM2_ActivateCredential,
// TPM2_ObjectChangeAuth and every other command it does not name; its
// fixedTPM and fixedParent forbid TPM2_Duplicate.
//
// Like [EK], an ImportKey is built from the certified public key placed in
// the fixed template, never read back from a TPM, so its Name is derived
// from what the AK certified.
type ImportKey struct {
	kind   EKKind
	public tpm2.TPMTPublic
	name   []byte                       // Name of public, computed once
	der    []byte                       // SubjectPublicKeyInfo of key, encoded once: every blob holds it
	encap  tpm2.LabeledEncapsulationKey // public as go-tpm wraps for it, made once: every seal uses it
}

// importCommands are the only commands the import key's policy allows.
var importCommands = []tpm2.TPMCC{tpm2.TPMCCImport, tpm2.TPMCCLoad, tpm2.TPMCCCertify}

// importPolicy is PolicyOR over PolicyCommandCode(cc) for each allowed
// command.
var importPolicy, importBranches = mustImportPolicy()

func mustImportPolicy() ([]byte, tpm2.TPMLDigest) {
	var branches tpm2.TPMLDigest
	for _, cc := range importCommands {
		calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
		if err != nil {
			panic(err)
		}
		if err := (tpm2.PolicyCommandCode{Code: cc}).Update(calc); err != nil {
			panic(err)
		}
		branches.Digests = append(branches.Digests, tpm2.TPM2BDigest{Buffer: calc.Hash().Digest})
	}
	digest, err := orOf(branches)
	if err != nil {
		panic(err)
	}
	return digest, branches
}

// importTemplate is the EK template of kind with the import key's policy.
// The EK templates already have userWithAuth clear and adminWithPolicy
// set, so every use needs a policy session.
func (k EKKind) importTemplate() tpm2.TPMTPublic {
	t := k.template()
	t.AuthPolicy = tpm2.TPM2BDigest{Buffer: bytes.Clone(importPolicy)}
	return t
}

func (k EKKind) importHandle() tpm2.TPMHandle {
	if k == EKECCP256 {
		return ECCImportKeyHandle
	}
	return RSAImportKeyHandle
}

// NewImportKey places an RSA-2048 or P-256 public key in the import key
// template of its kind.
func NewImportKey(pub crypto.PublicKey) (*ImportKey, error) {
	ek, err := NewEK(pub)
	if err != nil {
		return nil, fmt.Errorf("import key: %w", err)
	}
	public := ek.kind.importTemplate()
	public.Unique = ek.public.Unique
	encap, err := tpm2.ImportEncapsulationKey(&public)
	if err != nil {
		return nil, fmt.Errorf("the import key cannot wrap imports: %w", err)
	}
	return &ImportKey{kind: ek.kind, public: public, name: objectName(&public), der: ek.MarshalPKIX(), encap: encap}, nil
}

// encapsulation is the key a seal wraps for: an ImportKey not made by
// NewImportKey (or read back by this package) has none.
func (k *ImportKey) encapsulation() (tpm2.LabeledEncapsulationKey, error) {
	if k.encap == nil {
		return nil, errors.New("the import key has no public key to wrap for (not made by NewImportKey)")
	}
	return k.encap, nil
}

// ParseImportKey reads an import key from its PKIX DER encoding.
func ParseImportKey(der []byte) (*ImportKey, error) {
	ek, err := ParseEK(der)
	if err != nil {
		return nil, fmt.Errorf("import key: %w", err)
	}
	return NewImportKey(ek.key)
}

// Kind says whether this is the RSA or the ECC import key.
func (k *ImportKey) Kind() EKKind { return k.kind }

// PublicKey returns the key as a Go public key, a copy of its own: the
// scoped keys a process parsed once (ParseScopedKey) share one ImportKey,
// so nothing a caller does to what it is given may reach it.
func (k *ImportKey) PublicKey() crypto.PublicKey {
	key, err := x509.ParsePKIXPublicKey(k.der)
	if err != nil {
		panic("tpm: an import key's own encoding does not parse: " + err.Error())
	}
	return key
}

// MarshalPKIX returns the key's SubjectPublicKeyInfo DER encoding.
func (k *ImportKey) MarshalPKIX() []byte { return bytes.Clone(k.der) }

// Name returns the key's TPM Name.
func (k *ImportKey) Name() []byte { return bytes.Clone(k.name) }

// Public is the key's public area: the template with its key, a copy of
// its own (see PublicKey).
func (k *ImportKey) Public() tpm2.TPMTPublic {
	public, err := tpm2.Unmarshal[tpm2.TPMTPublic](tpm2.Marshal(k.public))
	if err != nil {
		panic("tpm: an import key's own public area does not decode: " + err.Error())
	}
	return *public
}

func (k *ImportKey) authHandle(auth tpm2.Session) tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: k.kind.importHandle(), Name: tpm2.TPM2BName{Buffer: k.Name()}, Auth: auth}
}

// ErrNoImportKey means the TPM has no persistent import key of that kind.
var ErrNoImportKey = errors.New("the TPM has no import key (enroll the device)")

// ReadImportKey returns the TPM's persistent import key of kind, refusing
// a key at its handle that is not in the import key template.
func ReadImportKey(t transport.TPM, kind EKKind) (*ImportKey, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: kind.importHandle()}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("%w (%s at %#x)", ErrNoImportKey, kind, uint32(kind.importHandle()))
	}
	if err != nil {
		return nil, fmt.Errorf("reading the import key: %w", err)
	}
	return importKeyFromPublic(rsp.OutPublic, rsp.Name)
}

func importKeyFromPublic(out tpm2.TPM2BPublic, name tpm2.TPM2BName) (*ImportKey, error) {
	public, err := out.Contents()
	if err != nil {
		return nil, fmt.Errorf("parsing the import key: %w", err)
	}
	pub, err := tpm2.Pub(*public)
	if err != nil {
		return nil, fmt.Errorf("parsing the import key: %w", err)
	}
	k, err := NewImportKey(pub)
	if err != nil {
		return nil, err
	}
	if !equalBytes(k.Name(), name.Buffer) {
		return nil, errors.New("the key at the import key's handle is not in the import key template; evict it and enroll again")
	}
	return k, nil
}

// ProvisionImportKey makes sure the TPM has its import key of kind and
// returns it. A missing key is derived from the endorsement seed with the
// template and made persistent: an RSA primary takes seconds to generate
// on a discrete TPM, too long for every unseal. It needs the endorsement
// and owner hierarchies' (empty) authorizations, as [ProvisionEK] does.
func ProvisionImportKey(t transport.TPM, kind EKKind) (*ImportKey, error) {
	k, err := ReadImportKey(t, kind)
	if !errors.Is(err, ErrNoImportKey) {
		return k, err
	}
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(kind.importTemplate()),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating the import key: %w", err)
	}
	defer flush(t, created.ObjectHandle)
	k, err = importKeyFromPublic(created.OutPublic, created.Name)
	if err != nil {
		return nil, err
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
		PersistentHandle: kind.importHandle(),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("making the import key persistent: %w", err)
	}
	return k, nil
}

// passImportPolicy satisfies the import key's policy for command cc in
// sess: PolicyCommandCode(cc) · PolicyOR. The session then authorizes cc
// and nothing else.
func passImportPolicy(t transport.TPM, sess tpm2.Session, cc tpm2.TPMCC) error {
	if _, err := (tpm2.PolicyCommandCode{PolicySession: sess.Handle(), Code: cc}).Execute(t); err != nil {
		return fmt.Errorf("authorizing use of the import key: %w", err)
	}
	if err := policyOr(t, sess, importBranches); err != nil {
		return fmt.Errorf("authorizing use of the import key: %w", err)
	}
	return nil
}

// ImportKeyCertification is the AK's TPM2_Certify of the import key.
type ImportKeyCertification struct {
	Attest    []byte `json:"attest"`    // TPMS_ATTEST, as signed
	Signature []byte `json:"signature"` // TPMT_SIGNATURE over SHA-256(Attest)
}

// CertifyImportKey has the AK certify the TPM's import key k with nonce:
// a statement, signed by a key bound to the EK, that an object of k's
// Name is loaded in this TPM.
func (a *AK) CertifyImportKey(k *ImportKey, nonce []byte) (*ImportKeyCertification, error) {
	if len(nonce) == 0 || len(nonce) > MaxNonce {
		return nil, fmt.Errorf("nonce is %d bytes; want 1 to %d", len(nonce), MaxNonce)
	}
	sess, closeSession, err := tpm2.PolicySession(a.t, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, fmt.Errorf("starting a policy session: %w", err)
	}
	defer closeSession()
	if err := passImportPolicy(a.t, sess, tpm2.TPMCCCertify); err != nil {
		return nil, err
	}
	rsp, err := tpm2.Certify{
		ObjectHandle:   k.authHandle(sess),
		SignHandle:     a.authHandle(),
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		},
	}.Execute(a.t)
	if err != nil {
		return nil, fmt.Errorf("certifying the import key: %w", err)
	}
	return &ImportKeyCertification{Attest: rsp.CertifyInfo.Bytes(), Signature: tpm2.Marshal(rsp.Signature)}, nil
}

// VerifyImportKeyCertification checks, offline, that c is ak's
// certification, with nonce, of an object whose Name is that of key in
// the import key template: the key is in the same TPM as the AK, and its
// attributes and policy are exactly the template's.
func VerifyImportKeyCertification(ak *AKPublic, key *ImportKey, c *ImportKeyCertification, nonce []byte) error {
	if err := verifyECDSA(ak.key, c.Attest, c.Signature); err != nil {
		return fmt.Errorf("import key certification: %w", err)
	}
	attest, err := tpm2.Unmarshal[tpm2.TPMSAttest](c.Attest)
	if err != nil || !bytes.Equal(tpm2.Marshal(attest), c.Attest) {
		return errors.New("import key certification does not parse canonically")
	}
	if attest.Magic != tpm2.TPMGeneratedValue || attest.Type != tpm2.TPMSTAttestCertify {
		return errors.New("import key certification is not a TPM-generated certification")
	}
	if !equalBytes(attest.ExtraData.Buffer, nonce) {
		return errors.New("import key certification is for another nonce")
	}
	info, err := attest.Attested.Certify()
	if err != nil {
		return fmt.Errorf("import key certification: %w", err)
	}
	if !equalBytes(info.Name.Buffer, key.Name()) {
		return errors.New("the certified object is not this import key in the import key template")
	}
	return nil
}

// loadUnderImportKey imports w under k and loads it, each command in sess
// after the import key's policy for it.
func loadUnderImportKey(t transport.TPM, sess tpm2.Session, k *ImportKey, w *wrapped) (*tpm2.LoadResponse, error) {
	if err := passImportPolicy(t, sess, tpm2.TPMCCImport); err != nil {
		return nil, err
	}
	private, err := importUnder(t, k.authHandle(sess), w)
	if err != nil {
		return nil, fmt.Errorf("importing the wrapped object: %w", err)
	}
	if err := passImportPolicy(t, sess, tpm2.TPMCCLoad); err != nil {
		return nil, err
	}
	loaded, err := tpm2.Load{ParentHandle: k.authHandle(sess), InPrivate: private, InPublic: tpm2.New2B(w.public)}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("loading the imported object: %w", err)
	}
	return loaded, nil
}
