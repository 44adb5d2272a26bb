//go:build cgo

package smartcard

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// Key is a private key on a token, usable as a crypto.Signer. Close it.
type Key struct {
	mu         sync.Mutex
	ctx        *pkcs11.Ctx
	module     string
	slot       uint
	session    pkcs11.SessionHandle
	handle     pkcs11.ObjectHandle
	cert       *x509.Certificate
	pin        string
	alwaysAuth bool
	closed     bool
}

// Supported reports whether this build can use PKCS#11 modules: it can.
func Supported() error { return nil }

// Open logs into the token that holds the key uri names, through the
// PKCS#11 module at path module. cert is the key's certificate; when nil,
// the certificate stored on the token with the key's CKA_ID is used.
func Open(module string, uri URI, pin string, cert *x509.Certificate) (*Key, error) {
	ctx, err := acquire(module)
	if err != nil {
		return nil, err
	}
	k := &Key{ctx: ctx, module: module, pin: pin, cert: cert}
	if err := k.open(uri); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// A module is initialized once per process however many keys use it, and
// finalized when the last one closes: C_Initialize twice fails, and
// C_Finalize would pull the module from under the other keys.
var modules = struct {
	sync.Mutex
	m map[string]*moduleRef
}{m: make(map[string]*moduleRef)}

type moduleRef struct {
	ctx  *pkcs11.Ctx
	refs int
}

func acquire(module string) (*pkcs11.Ctx, error) {
	modules.Lock()
	defer modules.Unlock()
	if ref := modules.m[module]; ref != nil {
		ref.refs++
		return ref.ctx, nil
	}
	ctx := pkcs11.New(module)
	if ctx == nil {
		return nil, fmt.Errorf("cannot load PKCS#11 module %q; check --module", module)
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("PKCS#11 module %q did not initialize: %w", module, err)
	}
	modules.m[module] = &moduleRef{ctx: ctx, refs: 1}
	return ctx, nil
}

func release(module string) {
	modules.Lock()
	defer modules.Unlock()
	ref := modules.m[module]
	if ref == nil {
		return
	}
	if ref.refs--; ref.refs == 0 {
		ref.ctx.Finalize()
		ref.ctx.Destroy()
		delete(modules.m, module)
	}
}

func (k *Key) open(uri URI) error {
	slots, err := k.ctx.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("listing tokens: %w", err)
	}
	var matches []uint
	for _, s := range slots {
		info, err := k.ctx.GetTokenInfo(s)
		if err == nil && tokenMatches(info, uri) {
			matches = append(matches, s)
		}
	}
	if len(matches) == 0 {
		return errors.New("no token matches the pkcs11 URI; is the card inserted and the token label right?")
	}
	if len(matches) > 1 {
		return errors.New("several tokens match the pkcs11 URI; add token= or serial= to pick one")
	}
	k.slot = matches[0]
	if k.session, err = k.ctx.OpenSession(k.slot, pkcs11.CKF_SERIAL_SESSION); err != nil {
		return fmt.Errorf("opening a token session: %w", err)
	}
	if err := k.login(); err != nil {
		return err
	}
	if err := k.findKey(uri); err != nil {
		return err
	}
	if k.cert == nil {
		if err := k.findCertificate(); err != nil {
			return err
		}
	}
	switch k.cert.PublicKey.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
		return nil
	}
	return fmt.Errorf("certificate key type %T is not supported; use ECDSA or RSA", k.cert.PublicKey)
}

// login checks the PIN. Login state is shared by all sessions of the
// process on a token: when another key already logged in, Login returns
// CKR_USER_ALREADY_LOGGED_IN without checking this PIN, and logging out
// would invalidate the other key's handles. Refuse instead.
func (k *Key) login() error {
	err := k.ctx.Login(k.session, pkcs11.CKU_USER, k.pin)
	if errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		return errors.New("the token is already in use by another key of this process; use one key of a token at a time")
	}
	if err != nil {
		return k.pinError("token login failed", err)
	}
	return nil
}

// pinError says what a refused PIN means for the card: a wrong PIN costs
// one of the few tries a PIV card allows before it locks itself.
func (k *Key) pinError(what string, err error) error {
	switch {
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LOCKED)):
		return fmt.Errorf("%s: %w", what, ErrPINLocked)
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)):
		return fmt.Errorf("%s: %w%s", what, ErrWrongPIN, k.triesLeft())
	}
	return fmt.Errorf("%s (wrong PIN?): %w", what, err)
}

// triesLeft reads what the token says about its PIN retry counter.
func (k *Key) triesLeft() string {
	info, err := k.ctx.GetTokenInfo(k.slot)
	switch {
	case err != nil:
		return ""
	case info.Flags&pkcs11.CKF_USER_PIN_LOCKED != 0:
		return "; the PIN is now locked"
	case info.Flags&pkcs11.CKF_USER_PIN_FINAL_TRY != 0:
		return "; one try is left before the card locks the PIN"
	case info.Flags&pkcs11.CKF_USER_PIN_COUNT_LOW != 0:
		return "; the card locks the PIN after a few more"
	}
	return ""
}

// tokenMatches compares the URI's token attributes with the token's
// fixed-width, space-padded fields.
func tokenMatches(info pkcs11.TokenInfo, uri URI) bool {
	eq := func(want, have string) bool { return want == "" || want == strings.TrimRight(have, " \x00") }
	return eq(uri.Token, info.Label) && eq(uri.Serial, info.SerialNumber) &&
		eq(uri.Manufacturer, info.ManufacturerID) && eq(uri.Model, info.Model)
}

func (k *Key) findKey(uri URI) error {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}
	if uri.Object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, uri.Object))
	}
	if uri.ID != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, uri.ID))
	}
	found, err := k.find(tmpl)
	if err != nil {
		return err
	}
	if len(found) != 1 {
		return fmt.Errorf("%d private keys match the pkcs11 URI; exactly one must (check object= and id=)", len(found))
	}
	k.handle = found[0]
	attrs, err := k.ctx.GetAttributeValue(k.session, k.handle, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_ALWAYS_AUTHENTICATE, nil),
	})
	if err == nil && len(attrs) == 1 && len(attrs[0].Value) == 1 {
		k.alwaysAuth = attrs[0].Value[0] != 0
	}
	return nil
}

func (k *Key) find(tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := k.ctx.FindObjectsInit(k.session, tmpl); err != nil {
		return nil, err
	}
	found, _, err := k.ctx.FindObjects(k.session, 8)
	if ferr := k.ctx.FindObjectsFinal(k.session); err == nil {
		err = ferr
	}
	return found, err
}

// findCertificate reads the certificate object with the key's CKA_ID.
func (k *Key) findCertificate() error {
	attrs, err := k.ctx.GetAttributeValue(k.session, k.handle, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
	if err != nil || len(attrs) != 1 || len(attrs[0].Value) == 0 {
		return errors.New("the key has no CKA_ID to find its certificate by; pass --cert judge.pem")
	}
	found, err := k.find([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_ID, attrs[0].Value),
	})
	if err != nil || len(found) != 1 {
		return errors.New("no single certificate on the token for the key; pass --cert judge.pem")
	}
	value, err := k.ctx.GetAttributeValue(k.session, found[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil || len(value) != 1 {
		return errors.New("cannot read the certificate from the token; pass --cert judge.pem")
	}
	k.cert, err = x509.ParseCertificate(value[0].Value)
	return err
}

// AlwaysAuthenticate reports whether the token asks for the PIN before
// every signature (CKA_ALWAYS_AUTHENTICATE, as on PIV slot 9c).
func (k *Key) AlwaysAuthenticate() bool { return k.alwaysAuth }

// Certificate returns the key's certificate.
func (k *Key) Certificate() *x509.Certificate { return k.cert }

// Public returns the certificate's public key. warrant.Sign checks each
// signature against it, so a certificate for another key fails at once.
func (k *Key) Public() crypto.PublicKey { return k.cert.PublicKey }

// Sign signs a digest on the token. For RSA, opts may be *rsa.PSSOptions.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, errors.New("smartcard key is closed")
	}
	mech, data, err := mechanism(k.cert.PublicKey, digest, opts)
	if err != nil {
		return nil, err
	}
	if err := k.ctx.SignInit(k.session, []*pkcs11.Mechanism{mech}, k.handle); err != nil {
		return nil, fmt.Errorf("token refused to start signing: %w", err)
	}
	if k.alwaysAuth {
		if err := k.ctx.Login(k.session, pkcs11.CKU_CONTEXT_SPECIFIC, k.pin); err != nil {
			return nil, k.pinError("token refused the PIN for this signature", err)
		}
	}
	sig, err := k.ctx.Sign(k.session, data)
	if err != nil {
		return nil, fmt.Errorf("token signing failed: %w", err)
	}
	if _, ok := k.cert.PublicKey.(*ecdsa.PublicKey); ok {
		return ecdsaDER(sig)
	}
	return sig, nil
}

// digestInfoPrefixes are the DER DigestInfo headers that CKM_RSA_PKCS
// expects before the digest (RFC 8017, section 9.2, note 1).
var digestInfoPrefixes = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

var pssHashes = map[crypto.Hash][2]uint{
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512},
}

// mechanism picks the raw PKCS#11 mechanism and its input for a digest.
func mechanism(pub crypto.PublicKey, digest []byte, opts crypto.SignerOpts) (*pkcs11.Mechanism, []byte, error) {
	hash := opts.HashFunc()
	if hash.Size() != len(digest) {
		return nil, nil, errors.New("digest length does not match the hash")
	}
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil), digest, nil
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			h, ok := pssHashes[hash]
			salt := pss.SaltLength
			if salt == rsa.PSSSaltLengthEqualsHash {
				salt = hash.Size()
			}
			if !ok || salt <= 0 {
				return nil, nil, errors.New("RSA-PSS on a token needs SHA-256/384/512 and a salt as long as the hash")
			}
			return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(h[0], h[1], uint(salt))), digest, nil
		}
		prefix, ok := digestInfoPrefixes[hash]
		if !ok {
			return nil, nil, fmt.Errorf("hash %v is not supported for RSA", hash)
		}
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil), append(bytes.Clone(prefix), digest...), nil
	}
	return nil, nil, fmt.Errorf("key type %T is not supported", pub)
}

// ecdsaDER turns PKCS#11's r||s into the ASN.1 form X.509 and CMS use.
func ecdsaDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, errors.New("token returned a malformed ECDSA signature")
	}
	n := len(raw) / 2
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])})
}

// Close ends the session and unloads the module when no other key uses it. It is safe to call twice.
func (k *Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	k.pin = ""
	// Closing a token's last session logs the process out of it; an
	// explicit Logout would also log out other keys on the same token.
	if k.session != 0 {
		k.ctx.CloseSession(k.session)
	}
	release(k.module)
	return nil
}
