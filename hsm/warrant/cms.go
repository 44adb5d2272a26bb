package warrant

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/github/smimesign/ietf-cms/oid"
	"github.com/github/smimesign/ietf-cms/protocol"
)

const (
	// maxCMS caps a signed warrant: the 64 KiB document plus a few
	// certificate chains.
	maxCMS = 256 << 10
	// maxSigners and maxCerts bound the work an attacker can ask for.
	maxSigners = 8
	maxCerts   = 16
	// maxRSABits bounds RSA verification cost.
	maxRSABits = 8192
)

var (
	oidRSASSAPSS = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidMGF1      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	asn1Null     = []byte{0x05, 0x00}
)

// Signer is one signature to put on a warrant.
type Signer struct {
	Key   crypto.Signer       // the judge's key, usually on a smartcard
	Chain []*x509.Certificate // the key's certificate first, then intermediates
	PSS   bool                // RSA only: RSASSA-PSS instead of PKCS #1 v1.5
}

// Sign wraps content in CMS SignedData (RFC 5652, DER, content attached)
// with one SignerInfo per signer. Each SignerInfo has signed attributes
// content-type, message-digest and signing-time. The digest is SHA-384 for
// P-384 keys and SHA-256 otherwise. Each signature is checked against the
// certificate before it is used, so a token key that does not match the
// certificate fails here rather than at the appliance.
func Sign(content []byte, signers []Signer, signingTime time.Time) ([]byte, error) {
	if len(signers) == 0 {
		return nil, errors.New("no signers given")
	}
	eci, err := protocol.NewDataEncapsulatedContentInfo(content)
	if err != nil {
		return nil, err
	}
	sd, err := protocol.NewSignedData(eci)
	if err != nil {
		return nil, err
	}
	for _, s := range signers {
		if err := addSigner(sd, content, s, signingTime.UTC().Truncate(time.Second)); err != nil {
			return nil, err
		}
	}
	return sd.ContentInfoDER()
}

// CoSign adds signatures to a signed warrant, for a second authority under
// a "double lock" approval policy. The existing signatures must verify
// against their certificates, and are kept byte for byte.
func CoSign(p7s []byte, signers []Signer, signingTime time.Time) ([]byte, error) {
	if len(signers) == 0 {
		return nil, errors.New("no signers given")
	}
	m, err := parseMessage(p7s)
	if err != nil {
		return nil, err
	}
	// parseMessage accepted p7s as DER, so the plain decoder reads it.
	var ci protocol.ContentInfo
	if _, err := asn1.Unmarshal(p7s, &ci); err != nil {
		return nil, err
	}
	sd, err := ci.SignedDataContent()
	if err != nil {
		return nil, err
	}
	for _, s := range signers {
		if err := addSigner(sd, m.content, s, signingTime.UTC().Truncate(time.Second)); err != nil {
			return nil, err
		}
	}
	return sd.ContentInfoDER()
}

func addSigner(sd *protocol.SignedData, content []byte, s Signer, signingTime time.Time) error {
	if len(s.Chain) == 0 {
		return errors.New("signer has no certificate")
	}
	leaf := s.Chain[0]
	pub, ok := s.Key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return errors.New("the signing key does not match the certificate; pass the judge's own certificate")
	}
	alg, err := signingAlgorithm(leaf.PublicKey, s.PSS)
	if err != nil {
		return err
	}
	for _, c := range s.Chain {
		if !slices.ContainsFunc(sd.Certificates, func(rv asn1.RawValue) bool { return bytes.Equal(rv.FullBytes, c.Raw) }) {
			if err := sd.AddCertificate(c); err != nil {
				return err
			}
		}
	}
	attrs, err := signedAttributes(content, alg.hash, signingTime)
	if err != nil {
		return err
	}
	toSign, err := attrs.MarshaledForSigning()
	if err != nil {
		return err
	}
	h := alg.hash.New()
	h.Write(toSign)
	sig, err := s.Key.Sign(rand.Reader, h.Sum(nil), alg.opts)
	if err != nil {
		return fmt.Errorf("signing failed: %w", err)
	}
	if err := checkSignature(leaf.PublicKey, alg, toSign, sig); err != nil {
		return fmt.Errorf("the signature does not verify with the certificate's key: %w", err)
	}
	sid, err := protocol.NewIssuerAndSerialNumber(leaf)
	if err != nil {
		return err
	}
	sd.SignerInfos = append(sd.SignerInfos, protocol.SignerInfo{
		Version:            1,
		SID:                sid,
		DigestAlgorithm:    alg.digestID,
		SignedAttrs:        attrs,
		SignatureAlgorithm: alg.signatureID,
		Signature:          sig,
	})
	if !slices.ContainsFunc(sd.DigestAlgorithms, func(a pkix.AlgorithmIdentifier) bool { return a.Algorithm.Equal(alg.digestID.Algorithm) }) {
		sd.DigestAlgorithms = append(sd.DigestAlgorithms, alg.digestID)
	}
	return nil
}

func signedAttributes(content []byte, hash crypto.Hash, signingTime time.Time) (protocol.Attributes, error) {
	h := hash.New()
	h.Write(content)
	ct, err := protocol.NewAttribute(oid.AttributeContentType, oid.ContentTypeData)
	if err != nil {
		return nil, err
	}
	md, err := protocol.NewAttribute(oid.AttributeMessageDigest, h.Sum(nil))
	if err != nil {
		return nil, err
	}
	st, err := protocol.NewAttribute(oid.AttributeSigningTime, signingTime)
	if err != nil {
		return nil, err
	}
	attrs := protocol.Attributes{ct, md, st}
	// The SignerInfo carries the attributes in slice order while the
	// signature covers their DER SET OF encoding, which is sorted: sort the
	// slice the same way so both agree.
	slices.SortFunc(attrs, func(a, b protocol.Attribute) int {
		return bytes.Compare(a.RawValue.FullBytes, b.RawValue.FullBytes)
	})
	return attrs, nil
}

// algorithm is one accepted combination of digest and signature.
type algorithm struct {
	hash        crypto.Hash
	digestID    pkix.AlgorithmIdentifier
	signatureID pkix.AlgorithmIdentifier
	opts        crypto.SignerOpts
	pss         *rsa.PSSOptions
}

type pssParameters struct {
	Hash         pkix.AlgorithmIdentifier `asn1:"explicit,tag:0"`
	MGF          pkix.AlgorithmIdentifier `asn1:"explicit,tag:1"`
	SaltLength   int                      `asn1:"optional,explicit,tag:2,default:20"`
	TrailerField int                      `asn1:"optional,explicit,tag:3,default:1"`
}

var digestOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA256: oid.DigestAlgorithmSHA256,
	crypto.SHA384: oid.DigestAlgorithmSHA384,
	crypto.SHA512: oid.DigestAlgorithmSHA512,
}

var ecdsaOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA256: oid.SignatureAlgorithmECDSAWithSHA256,
	crypto.SHA384: oid.SignatureAlgorithmECDSAWithSHA384,
	crypto.SHA512: oid.SignatureAlgorithmECDSAWithSHA512,
}

var rsaOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA256: oid.SignatureAlgorithmSHA256WithRSA,
	crypto.SHA384: oid.SignatureAlgorithmSHA384WithRSA,
	crypto.SHA512: oid.SignatureAlgorithmSHA512WithRSA,
}

// signingAlgorithm picks what Sign uses for a key.
func signingAlgorithm(pub crypto.PublicKey, pss bool) (algorithm, error) {
	if err := checkKey(pub); err != nil {
		return algorithm{}, err
	}
	hash := crypto.SHA256
	if k, ok := pub.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P384() {
		hash = crypto.SHA384
	}
	a := algorithm{hash: hash, digestID: pkix.AlgorithmIdentifier{Algorithm: digestOIDs[hash]}, opts: hash}
	switch pub.(type) {
	case *ecdsa.PublicKey:
		if pss {
			return algorithm{}, errors.New("PSS is for RSA keys only")
		}
		a.signatureID = pkix.AlgorithmIdentifier{Algorithm: ecdsaOIDs[hash]}
	case *rsa.PublicKey:
		// rsaEncryption, as openssl writes it.
		a.signatureID = pkix.AlgorithmIdentifier{Algorithm: oid.PublicKeyAlgorithmRSA, Parameters: asn1.NullRawValue}
		if pss {
			params, err := marshalPSS(hash)
			if err != nil {
				return algorithm{}, err
			}
			a.signatureID = pkix.AlgorithmIdentifier{Algorithm: oidRSASSAPSS, Parameters: params}
			a.pss = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: hash}
			a.opts = a.pss
		}
	}
	return a, nil
}

func marshalPSS(hash crypto.Hash) (asn1.RawValue, error) {
	hashID := pkix.AlgorithmIdentifier{Algorithm: digestOIDs[hash], Parameters: asn1.NullRawValue}
	mgfParams, err := asn1.Marshal(hashID)
	if err != nil {
		return asn1.RawValue{}, err
	}
	der, err := asn1.Marshal(pssParameters{
		Hash:         hashID,
		MGF:          pkix.AlgorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: mgfParams}},
		SaltLength:   hash.Size(),
		TrailerField: 1,
	})
	return asn1.RawValue{FullBytes: der}, err
}

// checkKey accepts ECDSA P-256 and P-384 and RSA of 2048 to 8192 bits.
func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return refuse(ReasonBadAlgorithm, "ECDSA curve %s is not accepted; use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return refuse(ReasonWeakKey, "RSA key of %d bits is too weak; use at least 2048", k.N.BitLen())
		}
		if k.N.BitLen() > maxRSABits {
			return refuse(ReasonBadAlgorithm, "RSA key of %d bits is larger than %d", k.N.BitLen(), maxRSABits)
		}
	default:
		return refuse(ReasonBadAlgorithm, "signer key type %T is not accepted; use ECDSA or RSA", pub)
	}
	return nil
}

// checkSignature verifies sig over the DER of the signed attributes.
func checkSignature(pub crypto.PublicKey, alg algorithm, signed, sig []byte) error {
	h := alg.hash.New()
	h.Write(signed)
	digest := h.Sum(nil)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ECDSA signature invalid")
		}
		return nil
	case *rsa.PublicKey:
		if alg.pss != nil {
			return rsa.VerifyPSS(k, alg.hash, digest, sig, alg.pss)
		}
		return rsa.VerifyPKCS1v15(k, alg.hash, digest, sig)
	}
	return errors.New("unsupported key")
}

// absentOrNull reports whether algorithm parameters are missing or NULL,
// the two encodings RFC 5754 allows for SHA-2 identifiers.
func absentOrNull(p asn1.RawValue) bool {
	return len(p.FullBytes) == 0 || bytes.Equal(p.FullBytes, asn1Null)
}

// parseDigest accepts SHA-256, SHA-384 and SHA-512; SHA-1 and MD5 are refused.
func parseDigest(id pkix.AlgorithmIdentifier) (crypto.Hash, error) {
	for h, o := range digestOIDs {
		if id.Algorithm.Equal(o) && absentOrNull(id.Parameters) {
			return h, nil
		}
	}
	return 0, refuse(ReasonBadAlgorithm, "digest algorithm %v is not accepted; use SHA-256, SHA-384 or SHA-512", id.Algorithm)
}

// verificationAlgorithm checks that the signature algorithm fits the key
// and the digest algorithm, and returns how to verify.
func verificationAlgorithm(pub crypto.PublicKey, hash crypto.Hash, sigID pkix.AlgorithmIdentifier) (algorithm, error) {
	if err := checkKey(pub); err != nil {
		return algorithm{}, err
	}
	a := algorithm{hash: hash}
	bad := func() error {
		return refuse(ReasonBadAlgorithm, "signature algorithm %v does not match the key and digest %v", sigID.Algorithm, hash)
	}
	switch pub.(type) {
	case *ecdsa.PublicKey:
		if !sigID.Algorithm.Equal(ecdsaOIDs[hash]) || len(sigID.Parameters.FullBytes) != 0 {
			return a, bad()
		}
	case *rsa.PublicKey:
		switch {
		case sigID.Algorithm.Equal(oid.PublicKeyAlgorithmRSA), sigID.Algorithm.Equal(rsaOIDs[hash]):
			if !absentOrNull(sigID.Parameters) {
				return a, bad()
			}
		case sigID.Algorithm.Equal(oidRSASSAPSS):
			opts, err := parsePSS(sigID.Parameters, hash)
			if err != nil {
				return a, err
			}
			a.pss = opts
		default:
			return a, bad()
		}
	}
	return a, nil
}

// parsePSS accepts PSS parameters whose hash and MGF1 hash equal the digest
// algorithm, with the standard trailer. The salt length is taken as given
// (openssl writes the maximum, 222 bytes for RSA-2048 and SHA-256).
func parsePSS(params asn1.RawValue, hash crypto.Hash) (*rsa.PSSOptions, error) {
	var p pssParameters
	rest, err := asn1.Unmarshal(params.FullBytes, &p)
	if err != nil || len(rest) != 0 {
		return nil, refuse(ReasonBadAlgorithm, "RSASSA-PSS parameters are malformed")
	}
	var mgfHash pkix.AlgorithmIdentifier
	if rest, err := asn1.Unmarshal(p.MGF.Parameters.FullBytes, &mgfHash); err != nil || len(rest) != 0 || !p.MGF.Algorithm.Equal(oidMGF1) {
		return nil, refuse(ReasonBadAlgorithm, "RSASSA-PSS mask generation must be MGF1")
	}
	h1, err1 := parseDigest(p.Hash)
	h2, err2 := parseDigest(mgfHash)
	if err1 != nil || err2 != nil || h1 != hash || h2 != hash || p.TrailerField != 1 || p.SaltLength < 0 {
		return nil, refuse(ReasonBadAlgorithm, "RSASSA-PSS parameters must use the digest algorithm for hash and MGF1")
	}
	return &rsa.PSSOptions{SaltLength: p.SaltLength, Hash: hash}, nil
}

// signedData mirrors protocol.SignedData but keeps each SignerInfo's signed
// attributes as raw bytes: the signature covers exactly those bytes, so
// they must not be re-encoded before verification.
type signedData struct {
	Version          int
	DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
	EncapContentInfo protocol.EncapsulatedContentInfo
	Certificates     []asn1.RawValue `asn1:"optional,set,tag:0"`
	CRLs             []asn1.RawValue `asn1:"optional,set,tag:1"`
	SignerInfos      []signerInfo    `asn1:"set"`
}

type signerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

// message is a CMS SignedData whose every signature verified against the
// certificate it names. Nothing about trust is known yet.
type message struct {
	content []byte
	certs   []*x509.Certificate
	signers []signature
}

// signature is one verified SignerInfo.
type signature struct {
	cert        *x509.Certificate
	signingTime time.Time
}

// parseMessage decodes a signed warrant strictly and verifies each
// signature with the certificate its SignerInfo names.
func parseMessage(der []byte) (*message, error) {
	sd, err := decodeSignedData(der)
	if err != nil {
		return nil, err
	}
	content, err := encapsulatedContent(sd.EncapContentInfo)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertificates(sd.Certificates)
	if err != nil {
		return nil, err
	}
	if len(sd.SignerInfos) == 0 {
		return nil, refuse(ReasonNoSigners, "warrant is not signed")
	}
	if len(sd.SignerInfos) > maxSigners {
		return nil, refuse(ReasonTooManySigners, "warrant has %d signatures, at most %d allowed", len(sd.SignerInfos), maxSigners)
	}
	m := &message{content: content, certs: certs}
	digests := make(map[crypto.Hash][]byte)
	for i := range sd.SignerInfos {
		sig, err := verifySignerInfo(&sd.SignerInfos[i], content, certs, digests)
		if err != nil {
			return nil, err
		}
		m.signers = append(m.signers, sig)
	}
	return m, nil
}

// notCMS says what a file that is not a DER CMS structure looks like, for
// the person who gave it: the decoder's own words describe Go's structures.
func notCMS(data []byte) string {
	head := bytes.TrimLeft(data, " \t\r\n\ufeff")
	switch {
	case len(head) == 0:
		return "the file is empty"
	case head[0] == '{':
		return "this is JSON, an unsigned warrant: a judge signs it first (custodian warrant sign)"
	case bytes.HasPrefix(head, []byte("-----BEGIN")):
		return "this is PEM; the signed warrant is the DER file (openssl cms -outform DER, or custodian warrant sign)"
	}
	return "the file is something else, or cut short"
}

func decodeSignedData(der []byte) (*signedData, error) {
	if len(der) > maxCMS {
		return nil, refuse(ReasonTooLarge, "signed warrant is %d bytes, at most %d allowed", len(der), maxCMS)
	}
	var ci protocol.ContentInfo
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil {
		// Go's decoder takes DER only. Tell the common BER form apart from
		// garbage without a BER parser: protocol.BER2DER panics on
		// truncated input (found by FuzzVerify), so it never sees
		// untrusted bytes here.
		if len(der) >= 2 && der[0] == 0x30 && der[1] == 0x80 {
			return nil, refuse(ReasonNotDER, "signed warrant is BER with indefinite lengths, not DER; sign without streaming (openssl cms without -stream, -outform DER)")
		}
		return nil, refuse(ReasonMalformedCMS, "signed warrant is not CMS (DER): %s", notCMS(der))
	}
	if len(rest) != 0 {
		return nil, refuse(ReasonMalformedCMS, "signed warrant has data after the CMS structure")
	}
	if !ci.ContentType.Equal(oid.ContentTypeSignedData) {
		return nil, refuse(ReasonNotSignedData, "CMS content type is %v, not signedData", ci.ContentType)
	}
	var sd signedData
	rest, err = asn1.Unmarshal(ci.Content.Bytes, &sd)
	if err != nil || len(rest) != 0 {
		return nil, refuse(ReasonMalformedCMS, "CMS SignedData is malformed (truncated or damaged)")
	}
	if sd.Version != 1 && sd.Version != 3 {
		return nil, refuse(ReasonMalformedCMS, "CMS SignedData version %d is not 1 or 3", sd.Version)
	}
	return &sd, nil
}

// encapsulatedContent returns the attached id-data content. DER requires
// a primitive OCTET STRING, so a segmented one is refused as BER.
func encapsulatedContent(eci protocol.EncapsulatedContentInfo) ([]byte, error) {
	if !eci.IsTypeData() {
		return nil, refuse(ReasonWrongContentType, "CMS content type is %v, not id-data", eci.EContentType)
	}
	if len(eci.EContent.FullBytes) == 0 {
		return nil, refuse(ReasonDetached, "CMS content is detached; sign with the content attached (openssl cms -nodetach)")
	}
	var octets asn1.RawValue
	rest, err := asn1.Unmarshal(eci.EContent.Bytes, &octets)
	if err != nil || len(rest) != 0 || octets.Class != asn1.ClassUniversal || octets.Tag != asn1.TagOctetString {
		return nil, refuse(ReasonMalformedCMS, "CMS content is not an OCTET STRING")
	}
	if octets.IsCompound {
		return nil, refuse(ReasonNotDER, "CMS content is a segmented OCTET STRING (BER); sign without streaming")
	}
	if len(octets.Bytes) > MaxSize {
		return nil, refuse(ReasonTooLarge, "warrant is %d bytes, at most %d allowed", len(octets.Bytes), MaxSize)
	}
	return octets.Bytes, nil
}

func parseCertificates(raws []asn1.RawValue) ([]*x509.Certificate, error) {
	if len(raws) > maxCerts {
		return nil, refuse(ReasonMalformedCMS, "CMS carries %d certificates, at most %d allowed", len(raws), maxCerts)
	}
	certs := make([]*x509.Certificate, 0, len(raws))
	for _, raw := range raws {
		if raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagSequence {
			return nil, refuse(ReasonMalformedCMS, "CMS carries a certificate that is not X.509")
		}
		c, err := parseCertificate(raw.FullBytes)
		if err != nil {
			return nil, refuse(ReasonMalformedCMS, "CMS carries a malformed certificate")
		}
		certs = append(certs, c)
	}
	return certs, nil
}

func verifySignerInfo(si *signerInfo, content []byte, certs []*x509.Certificate, digests map[crypto.Hash][]byte) (signature, error) {
	cert, err := findSigner(si, certs)
	if err != nil {
		return signature{}, err
	}
	hash, err := parseDigest(si.DigestAlgorithm)
	if err != nil {
		return signature{}, err
	}
	alg, err := verificationAlgorithm(cert.PublicKey, hash, si.SignatureAlgorithm)
	if err != nil {
		return signature{}, err
	}
	if len(si.UnsignedAttrs.FullBytes) != 0 {
		return signature{}, refuse(ReasonUnsignedAttributes, "signature carries unsigned attributes; they are not accepted")
	}
	if len(si.SignedAttrs.FullBytes) == 0 {
		return signature{}, refuse(ReasonNoSignedAttributes, "signature has no signed attributes; a signing time is required")
	}
	// The signature covers the attributes with their SET OF tag in place
	// of the [0] IMPLICIT tag (RFC 5652, section 5.4).
	signed := bytes.Clone(si.SignedAttrs.FullBytes)
	signed[0] = 0x31
	if _, ok := digests[hash]; !ok {
		h := hash.New()
		h.Write(content)
		digests[hash] = h.Sum(nil)
	}
	signingTime, err := checkSignedAttributes(signed, digests[hash])
	if err != nil {
		return signature{}, err
	}
	if err := checkSignature(cert.PublicKey, alg, signed, si.Signature); err != nil {
		return signature{}, refuseErr(ReasonBadSignature, err, "signature by %q does not verify", cert.Subject.CommonName)
	}
	return signature{cert: cert, signingTime: signingTime}, nil
}

// findSigner returns the certificate the SignerInfo names: version 1 by
// issuer and serial number, version 3 by subject key identifier.
func findSigner(si *signerInfo, certs []*x509.Certificate) (*x509.Certificate, error) {
	var match func(*x509.Certificate) bool
	switch {
	case si.Version == 1 && si.SID.Class == asn1.ClassUniversal && si.SID.Tag == asn1.TagSequence:
		var isn protocol.IssuerAndSerialNumber
		if rest, err := asn1.Unmarshal(si.SID.FullBytes, &isn); err != nil || len(rest) != 0 || isn.SerialNumber == nil {
			return nil, refuse(ReasonMalformedCMS, "signer identifier is malformed")
		}
		match = func(c *x509.Certificate) bool {
			return bytes.Equal(c.RawIssuer, isn.Issuer.FullBytes) && c.SerialNumber.Cmp(isn.SerialNumber) == 0
		}
	case si.Version == 3 && si.SID.Class == asn1.ClassContextSpecific && si.SID.Tag == 0 && !si.SID.IsCompound:
		match = func(c *x509.Certificate) bool {
			return len(c.SubjectKeyId) != 0 && bytes.Equal(c.SubjectKeyId, si.SID.Bytes)
		}
	default:
		return nil, refuse(ReasonMalformedCMS, "signer identifier does not fit SignerInfo version %d", si.Version)
	}
	var found *x509.Certificate
	for _, c := range certs {
		if match(c) {
			if found != nil && !found.Equal(c) {
				return nil, refuse(ReasonMalformedCMS, "signer identifier matches two different certificates")
			}
			found = c
		}
	}
	if found == nil {
		return nil, refuse(ReasonSignerCertMissing, "the signer's certificate is not in the warrant; sign with the certificate included")
	}
	return found, nil
}

// checkSignedAttributes requires exactly one content-type (id-data), one
// message-digest (equal to the content's digest) and one signing-time, each
// with one value, and no attribute type twice. Other attributes, such as
// openssl's S/MIME capabilities, are covered by the signature and ignored.
func checkSignedAttributes(set []byte, digest []byte) (time.Time, error) {
	var attrs protocol.Attributes
	rest, err := asn1.UnmarshalWithParams(set, &attrs, "set")
	if err != nil || len(rest) != 0 || len(attrs) == 0 {
		return time.Time{}, refuseErr(ReasonBadSignedAttributes, err, "signed attributes are malformed")
	}
	values := make(map[string]asn1.RawValue)
	for _, a := range attrs {
		key := a.Type.String()
		if _, dup := values[key]; dup {
			return time.Time{}, refuse(ReasonBadSignedAttributes, "signed attribute %v appears twice", a.Type)
		}
		set, err := a.Value()
		if err != nil {
			return time.Time{}, refuseErr(ReasonBadSignedAttributes, err, "signed attribute %v is malformed", a.Type)
		}
		if len(set.Elements) != 1 {
			values[key] = asn1.RawValue{}
			continue
		}
		values[key] = set.Elements[0]
	}
	if err := checkContentTypeAttr(values[oid.AttributeContentType.String()]); err != nil {
		return time.Time{}, err
	}
	if err := checkDigestAttr(values[oid.AttributeMessageDigest.String()], digest); err != nil {
		return time.Time{}, err
	}
	return signingTimeAttr(values[oid.AttributeSigningTime.String()])
}

func checkContentTypeAttr(v asn1.RawValue) error {
	if len(v.FullBytes) == 0 {
		return refuse(ReasonBadSignedAttributes, "signed attributes lack a single content-type")
	}
	var ct asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(v.FullBytes, &ct); err != nil || len(rest) != 0 {
		return refuse(ReasonBadSignedAttributes, "signed content-type is malformed")
	}
	if !ct.Equal(oid.ContentTypeData) {
		return refuse(ReasonContentTypeMismatch, "signed content-type %v differs from the content's id-data", ct)
	}
	return nil
}

func checkDigestAttr(v asn1.RawValue, digest []byte) error {
	if len(v.FullBytes) == 0 || v.Class != asn1.ClassUniversal || v.Tag != asn1.TagOctetString || v.IsCompound {
		return refuse(ReasonBadSignedAttributes, "signed attributes lack a single message-digest")
	}
	if subtle.ConstantTimeCompare(v.Bytes, digest) != 1 {
		return refuse(ReasonDigestMismatch, "the warrant was changed after it was signed")
	}
	return nil
}

func signingTimeAttr(v asn1.RawValue) (time.Time, error) {
	if len(v.FullBytes) == 0 {
		return time.Time{}, refuse(ReasonNoSigningTime, "signature has no single signing-time attribute")
	}
	var t time.Time
	rest, err := asn1.Unmarshal(v.FullBytes, &t)
	if err != nil || len(rest) != 0 || v.Class != asn1.ClassUniversal ||
		(v.Tag != asn1.TagUTCTime && v.Tag != asn1.TagGeneralizedTime) {
		return time.Time{}, refuse(ReasonNoSigningTime, "signing-time attribute is malformed")
	}
	return t, nil
}

// issuerSerial formats a certificate's issuer and serial for people.
func issuerSerial(c *x509.Certificate) string {
	return fmt.Sprintf("%s #%s", c.Issuer, c.SerialNumber.Text(16))
}
