package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Persistent handles of the endorsement keys, from the TCG EK Credential
// Profile, and the NV indices of their certificates.
const (
	RSAEKHandle     tpm2.TPMHandle = 0x81010001
	ECCEKHandle     tpm2.TPMHandle = 0x81010002
	rsaEKCertIndex  tpm2.TPMHandle = 0x01C00002
	eccEKCertIndex  tpm2.TPMHandle = 0x01C0000A
	ekChainFirst    tpm2.TPMHandle = 0x01C00100
	ekChainLast     tpm2.TPMHandle = 0x01C001FF
	maxCertificates                = 8
)

// EKKind names the two endorsement keys a TPM may have. RSA-2048 is the
// default: every TPM has it, including the Pi's SLB9670 and swtpm.
type EKKind int

const (
	EKRSA2048 EKKind = iota
	EKECCP256
)

func (k EKKind) String() string {
	if k == EKECCP256 {
		return "ecc-p256"
	}
	return "rsa-2048"
}

// ParseEKKind reads "rsa-2048" or "ecc-p256".
func ParseEKKind(s string) (EKKind, error) {
	switch s {
	case "rsa-2048", "rsa":
		return EKRSA2048, nil
	case "ecc-p256", "ecc":
		return EKECCP256, nil
	}
	return 0, fmt.Errorf("unknown EK kind %q: want rsa-2048 or ecc-p256", s)
}

// ErrNoEK means the TPM has no persistent endorsement key of that kind.
var ErrNoEK = errors.New("the TPM has no persistent endorsement key")

// EK is a TPM's endorsement key as a remote party knows it: the public
// key, placed in the TCG default EK template. Building the public area from
// the template, rather than taking one from the TPM, means the key's Name
// (what sessions and imports are bound to) is derived from the certified
// key alone.
type EK struct {
	kind   EKKind
	public tpm2.TPMTPublic
	key    crypto.PublicKey
	name   []byte // Name of public, computed once: go-tpm marshals by reflection
}

// NewEK places an RSA-2048 (exponent 65537) or ECDSA P-256 public key in
// the TCG EK template. Other keys are refused.
func NewEK(pub crypto.PublicKey) (*EK, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 || k.E != 65537 {
			return nil, fmt.Errorf("RSA endorsement key must be 2048 bits with exponent 65537, got %d bits, e=%d", k.N.BitLen(), k.E)
		}
		public := tpm2.RSAEKTemplate
		public.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
		return newEK(EKRSA2048, public, k), nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("ECC endorsement key must be on P-256")
		}
		if _, err := k.ECDH(); err != nil {
			return nil, fmt.Errorf("ECC endorsement key: %w", err)
		}
		public := tpm2.ECCEKTemplate
		public.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
		})
		return newEK(EKECCP256, public, k), nil
	}
	return nil, fmt.Errorf("unsupported endorsement key type %T", pub)
}

func newEK(kind EKKind, public tpm2.TPMTPublic, key crypto.PublicKey) *EK {
	return &EK{kind: kind, public: public, key: key, name: objectName(&public)}
}

// objectName is the Name of a public area built here from a template; a
// template that does not marshal is a bug, not an input error.
func objectName(public *tpm2.TPMTPublic) []byte {
	name, err := tpm2.ObjectName(public)
	if err != nil {
		panic("tpm: naming a template key: " + err.Error())
	}
	return name.Buffer
}

// ParseEK reads an EK from its PKIX (SubjectPublicKeyInfo) DER encoding.
func ParseEK(der []byte) (*EK, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing endorsement key: %w", err)
	}
	return NewEK(pub)
}

// Kind says whether this is the RSA or the ECC endorsement key.
func (e *EK) Kind() EKKind { return e.kind }

// PublicKey returns the key as a Go public key.
func (e *EK) PublicKey() crypto.PublicKey { return e.key }

// MarshalPKIX returns the key's SubjectPublicKeyInfo DER encoding.
func (e *EK) MarshalPKIX() []byte {
	der, err := x509.MarshalPKIXPublicKey(e.key)
	if err != nil {
		panic("tpm: marshalling a checked EK: " + err.Error())
	}
	return der
}

// Name returns the TPM Name of the key (SHA-256 over its public area,
// prefixed by the algorithm): the identity imports and sessions bind to.
func (e *EK) Name() []byte { return bytes.Clone(e.name) }

// handle is the persistent handle where the TPM keeps this kind of EK.
func (e *EK) handle() tpm2.TPMHandle { return e.kind.handle() }

func (k EKKind) handle() tpm2.TPMHandle {
	if k == EKECCP256 {
		return ECCEKHandle
	}
	return RSAEKHandle
}

func (k EKKind) template() tpm2.TPMTPublic {
	if k == EKECCP256 {
		return tpm2.ECCEKTemplate
	}
	return tpm2.RSAEKTemplate
}

// authHandle names the persistent EK for a command, with the Name computed
// from the key rather than read back from the TPM.
func (e *EK) authHandle(auth tpm2.Session) tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: e.handle(), Name: tpm2.TPM2BName{Buffer: e.Name()}, Auth: auth}
}

// ReadEK returns the TPM's persistent endorsement key of the given kind. It
// refuses a persistent key that is not in the TCG default template, since
// such a key may be usable for more than decryption of imports.
func ReadEK(t transport.TPM, kind EKKind) (*EK, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: kind.handle()}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, fmt.Errorf("%w (%s at %#x)", ErrNoEK, kind, uint32(kind.handle()))
	}
	if err != nil {
		return nil, fmt.Errorf("reading endorsement key: %w", err)
	}
	return ekFromPublic(rsp.OutPublic, rsp.Name)
}

// ekFromPublic checks that a public area the TPM returned is the template
// EK, by rebuilding it from its key and comparing Names.
func ekFromPublic(out tpm2.TPM2BPublic, name tpm2.TPM2BName) (*EK, error) {
	public, err := out.Contents()
	if err != nil {
		return nil, fmt.Errorf("parsing endorsement key: %w", err)
	}
	pub, err := tpm2.Pub(*public)
	if err != nil {
		return nil, fmt.Errorf("parsing endorsement key: %w", err)
	}
	ek, err := NewEK(pub)
	if err != nil {
		return nil, err
	}
	if !equalBytes(ek.Name(), name.Buffer) {
		return nil, errors.New("the TPM's endorsement key is not in the TCG default template")
	}
	return ek, nil
}

// ProvisionEK makes sure the TPM has a persistent endorsement key of the
// given kind and returns it. A missing key is derived from the endorsement
// seed with the TCG template and made persistent, as tpm2_createek does;
// this needs the owner hierarchy's (empty) authorization.
func ProvisionEK(t transport.TPM, kind EKKind) (*EK, error) {
	ek, err := ReadEK(t, kind)
	if !errors.Is(err, ErrNoEK) {
		return ek, err
	}
	created, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(kind.template()),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating endorsement key: %w", err)
	}
	defer flush(t, created.ObjectHandle)
	ek, err = ekFromPublic(created.OutPublic, created.Name)
	if err != nil {
		return nil, err
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
		PersistentHandle: kind.handle(),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("making the endorsement key persistent: %w", err)
	}
	return ek, nil
}

// flush unloads a transient object or session. Errors are ignored: it runs
// on cleanup paths where the first error is the one worth reporting.
func flush(t transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}
