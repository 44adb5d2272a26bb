// Package trust is the appliance's court trust store: the pinned court root
// certificates, each bound to the name of its court, one current CRL per
// issuing CA, and the approval policy.
//
// Contract:
//   - An empty store trusts nothing. A policy that asks for fewer than one
//     signer approves nothing; a policy never accepts "any" extended key
//     usage by leaving the list empty (empty is refused when set, and an
//     absent list reads as DefaultEKUs).
//   - A root must be a CA certificate (basic constraints CA, certSign usage)
//     without a name constraint the verifier cannot evaluate
//     (CheckNameConstraints), and is pinned for exactly one court: a root
//     key belongs to one court and a court has one root key, so the court
//     a warrant names and the root its signers chain to agree or the
//     warrant is refused, and the replay namespace of a court is its root
//     key (RootKeyID).
//   - A CRL is stored only after its signature verifies against a pinned root,
//     or against an intermediate CA that chains to one (given in the same
//     file); a CRL older than the stored one for the same issuer is refused,
//     so a revocation cannot be rolled back. The CRL is stored with the
//     chain that was checked, from its issuer up to (not including) the
//     pinned root, and every CRL is checked again when the store is opened.
//   - A stored CRL that no longer verifies at open (its issuer expired, a
//     file from an older version without its chain, a damaged file) does
//     not stop the store from opening: it is set aside (UnusableCRLs) and
//     its issuer has no CRL, so every certificate that issuer signed is
//     refused (no CRL: fail closed) while every other court's warrants
//     verify, and the trust admin can replace it with SetCRL.
//   - Layout under DIR (the data dir's "trust"): roots/<sha256>.json (a
//     versioned root file: court and certificate, see rootFile),
//     crls/<issuer-id>.pem (the CRL, then the certificates from its issuer
//     up to the pinned root, the root left out),
//     policy.json (versioned). Files are written to a temporary name, synced
//     and renamed. A store of an older format (roots/*.pem, roots pinned
//     without a court; policy.json without a version) is refused as a whole
//     with advice to set it up again, never read half.
//
// The store only answers questions; whether a warrant verifies is decided by
// package warrant.
package trust

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/internal/bytecache"
)

// CRL is a verified certificate revocation list.
type CRL struct {
	List   *x509.RevocationList
	Issuer *x509.Certificate
	// Chain is the path from Issuer (first) up to, not including, the
	// pinned root, as checked; empty when a pinned root issued the CRL.
	Chain   []*x509.Certificate
	revoked map[string]bool
}

// Revoked reports whether serial is on the list.
func (c *CRL) Revoked(serial *big.Int) bool { return c.revoked[serial.Text(16)] }

// Fresh reports whether the list is in force at now: issued no later than
// now and not past its nextUpdate. A CRL without nextUpdate is never fresh.
func (c *CRL) Fresh(now time.Time) bool {
	return !now.Before(c.List.ThisUpdate) && !c.List.NextUpdate.IsZero() && now.Before(c.List.NextUpdate)
}

// UnusableCRL is a stored CRL that no longer verifies. Its issuer has no
// CRL in the store, so the certificates it signed are refused until the
// trust admin sets a current CRL with its chain.
type UnusableCRL struct {
	// IssuerID is the file's issuer ID (crls/<IssuerID>.pem).
	IssuerID string
	// Issuer is the issuer's name as the CRL states it, "" if the file
	// does not parse.
	Issuer string
	// List is the CRL as parsed, nil if the file does not parse; a newer
	// CRL of its issuer must still not be older than it.
	List *x509.RevocationList
	// Err says why it does not verify.
	Err error
}

// Store is a trust store. Its methods are not safe for concurrent change;
// the appliance loads it once per request.
type Store struct {
	dir      string // "" for a store that lives only in memory
	roots    []Root
	courts   map[string]string // RootKeyID → court
	pool     *x509.CertPool
	crls     map[string]*CRL
	unusable map[string]UnusableCRL // by issuer ID
	policy   Policy
}

// New makes an in-memory store, for checking a warrant against files.
func New() *Store {
	return &Store{pool: x509.NewCertPool(), courts: make(map[string]string), crls: make(map[string]*CRL),
		unusable: make(map[string]UnusableCRL), policy: DefaultPolicy()}
}

// Open loads the store in dir. A missing dir is an empty store. A CRL that
// no longer verifies does not fail the store: see UnusableCRLs.
func Open(dir string) (*Store, error) {
	s := New()
	s.dir = dir
	if err := s.loadRoots(); err != nil {
		return nil, err
	}
	if err := s.loadCRLs(time.Now()); err != nil {
		return nil, err
	}
	if err := s.loadPolicy(); err != nil {
		return nil, err
	}
	return s, nil
}

// loadCRLs checks each stored CRL again, with the chain stored beside it.
// One that fails is set aside rather than failing the store: that it no
// longer verifies concerns its issuer's certificates, which then have no
// CRL and are refused, and not every other court's.
func (s *Store) loadCRLs(now time.Time) error {
	files, err := readDir(filepath.Join(s.dir, "crls"))
	if err != nil {
		return err
	}
	for _, f := range files {
		id := strings.TrimSuffix(f.name, ".pem")
		crl, err := s.verifyCRL(f.data, now)
		if err == nil && IssuerID(crl.Issuer) != id {
			err = fmt.Errorf("the file is named for issuer %s but holds the CRL of issuer %s", id, IssuerID(crl.Issuer))
		}
		if err != nil {
			u := UnusableCRL{IssuerID: id, Err: err}
			if list, _, perr := parseCRL(f.data); perr == nil {
				u.Issuer, u.List = list.Issuer.String(), list
			}
			s.unusable[id] = u
			continue
		}
		s.crls[id] = crl
	}
	return nil
}

type storedFile struct {
	name string
	data []byte
}

// readDir returns the names and contents of the regular .pem files in dir,
// in name order.
func readDir(dir string) ([]storedFile, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []storedFile
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, storedFile{e.Name(), data})
	}
	return out, nil
}

// UnusableCRLs returns the stored CRLs that did not verify when the store
// was opened, by issuer ID.
func (s *Store) UnusableCRLs() []UnusableCRL {
	out := make([]UnusableCRL, 0, len(s.unusable))
	for _, u := range s.unusable {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b UnusableCRL) int { return strings.Compare(a.IssuerID, b.IssuerID) })
	return out
}

// UnusableCRL returns why the stored CRL of issuer did not verify when the
// store was opened, or nil if there is none such.
func (s *Store) UnusableCRL(issuer *x509.Certificate) error {
	if u, ok := s.unusable[IssuerID(issuer)]; ok {
		return u.Err
	}
	return nil
}

// Roots returns the pinned roots with their courts, in the order pinned
// (on disk: by file name).
func (s *Store) Roots() []Root { return slices.Clone(s.roots) }

// Pool returns the pinned roots as a pool for chain building.
func (s *Store) Pool() *x509.CertPool { return s.pool }

// RootsDigest is a SHA-256 over the pinned roots' certificates, in the
// order they were pinned or loaded. Path building reads nothing else of the
// store, so two stores with the same digest build the same chains from the
// same certificates at the same time, whether or not they were opened
// separately: it names the store's generation for a cache of chains.
// Courts, CRLs and the policy are not in it; they are checked each time.
func (s *Store) RootsDigest() [32]byte {
	h := sha256.New()
	for _, r := range s.roots {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(r.Cert.Raw))))
		h.Write(r.Cert.Raw)
	}
	return [32]byte(h.Sum(nil))
}

// Empty reports whether the store has no roots, and so trusts nothing.
func (s *Store) Empty() bool { return len(s.roots) == 0 }

// CRL returns the stored CRL issued by issuer, or nil.
func (s *Store) CRL(issuer *x509.Certificate) *CRL { return s.crls[IssuerID(issuer)] }

// CRLs returns every stored CRL.
func (s *Store) CRLs() []*CRL {
	out := make([]*CRL, 0, len(s.crls))
	for _, c := range s.crls {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *CRL) int { return strings.Compare(a.Issuer.Subject.String(), b.Issuer.Subject.String()) })
	return out
}

// Policy returns the approval policy.
func (s *Store) Policy() Policy {
	p := s.policy
	p.EKUs, p.PolicyOIDs = slices.Clone(p.EKUs), slices.Clone(p.PolicyOIDs)
	return p
}

// IssuerID names a CA by subject and key, so a CRL is found only for the
// CA whose key signed it, not for another CA with the same name.
func IssuerID(c *x509.Certificate) string {
	h := sha256.New()
	h.Write(c.RawSubject)
	h.Write(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// SetCRL verifies a CRL (PEM or DER; PEM may carry the issuing intermediate
// CA certificates after the CRL) and stores it as the issuer's current list.
//
// The issuer's chain must be valid at now. The CRL replaces a stored one
// of the same issuer that no longer verifies (UnusableCRLs), as long as it
// is not older than that one either.
func (s *Store) SetCRL(data []byte, now time.Time) (*CRL, error) {
	crl, err := s.verifyCRL(data, now)
	if err != nil {
		return nil, err
	}
	if !crl.Fresh(now) {
		return nil, fmt.Errorf("CRL of %q is not in force now (this update %v, next update %v); fetch a current CRL",
			crl.Issuer.Subject, crl.List.ThisUpdate, crl.List.NextUpdate)
	}
	id := IssuerID(crl.Issuer)
	old := s.crls[id]
	if old == nil {
		if u, ok := s.unusable[id]; ok && u.List != nil {
			old = &CRL{List: u.List}
		}
	}
	if old != nil && isOlder(crl.List, old.List) {
		return nil, fmt.Errorf("CRL of %q is older than the stored one (this update %v < %v); a CRL is never rolled back",
			crl.Issuer.Subject, crl.List.ThisUpdate, old.List.ThisUpdate)
	}
	if s.dir != "" {
		out := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.List.Raw})
		for _, c := range crl.Chain {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		if err := s.write(filepath.Join("crls", id+".pem"), out); err != nil {
			return nil, err
		}
	}
	s.crls[id] = crl
	delete(s.unusable, id)
	return crl, nil
}

// isOlder reports whether a was issued before b, by CRL number when both
// have one, else by thisUpdate.
func isOlder(a, b *x509.RevocationList) bool {
	if a.Number != nil && b.Number != nil && a.Number.Cmp(b.Number) != 0 {
		return a.Number.Cmp(b.Number) < 0
	}
	return a.ThisUpdate.Before(b.ThisUpdate)
}

// verifyCRL parses a CRL and finds the CA that signed it: a pinned root, or
// an intermediate from the same file that chains to a pinned root at now
// through certificates of the same file. A self-issued certificate (a root
// key rollover's link certificate) is an intermediate like any other: only
// the certificates pinned as roots are roots.
func (s *Store) verifyCRL(data []byte, now time.Time) (*CRL, error) {
	list, extra, err := parseCRL(data)
	if err != nil {
		return nil, err
	}
	for _, r := range s.roots {
		root := r.Cert
		if bytes.Equal(root.RawSubject, list.RawIssuer) && crlSignedBy(list, root) {
			return newCRL(list, root, nil), nil
		}
	}
	inter := x509.NewCertPool()
	for _, c := range extra {
		inter.AddCert(c)
	}
	for _, c := range extra {
		if !bytes.Equal(c.RawSubject, list.RawIssuer) || !crlSignedBy(list, c) {
			continue
		}
		chains, err := c.Verify(x509.VerifyOptions{Roots: s.pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return nil, fmt.Errorf("the CRL's issuer %q does not chain to a pinned root: %w", c.Subject, err)
		}
		chain := chains[0]
		return newCRL(list, c, chain[:len(chain)-1]), nil
	}
	return nil, fmt.Errorf("the CRL of %q is not signed by a pinned root; add the court root first, or append the issuing CA certificate and the CA certificates above it to the CRL file", list.Issuer)
}

// signedCRLs are the CRL signatures found valid, by the CRL's and its
// signer's bytes. A store is opened for every request and checks each
// stored CRL again; the signature over the same bytes is checked once.
// Only the signature is kept: the issuer's chain, freshness and
// revocation are checked every time.
var signedCRLs = bytecache.New[struct{}](64)

// crlSignedBy reports whether issuer's key signed list.
func crlSignedBy(list *x509.RevocationList, issuer *x509.Certificate) bool {
	h := sha256.New()
	for _, b := range [][]byte{list.Raw, issuer.Raw} {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
		h.Write(b)
	}
	key := string(h.Sum(nil))
	if _, ok := signedCRLs.Get(key); ok {
		return true
	}
	if list.CheckSignatureFrom(issuer) != nil {
		return false
	}
	signedCRLs.Add(key, struct{}{})
	return true
}

func newCRL(list *x509.RevocationList, issuer *x509.Certificate, chain []*x509.Certificate) *CRL {
	c := &CRL{List: list, Issuer: issuer, Chain: chain, revoked: make(map[string]bool, len(list.RevokedCertificateEntries))}
	for _, e := range list.RevokedCertificateEntries {
		c.revoked[e.SerialNumber.Text(16)] = true
	}
	return c
}

// parseCRL reads a DER CRL, or PEM with one "X509 CRL" block followed by
// optional "CERTIFICATE" blocks (explanatory text around them is skipped:
// package certfile). DER is tried first, as package certfile does.
func parseCRL(data []byte) (*x509.RevocationList, []*x509.Certificate, error) {
	if certfile.MaybeDER(data) {
		if list, err := x509.ParseRevocationList(data); err == nil {
			return list, nil, checkCRLExtensions(list)
		}
	}
	if !certfile.IsPEM(data) {
		return nil, nil, errNotCRL
	}
	blocks, err := certfile.Blocks(data)
	if err != nil {
		return nil, nil, err
	}
	var list *x509.RevocationList
	var certs []*x509.Certificate
	for i, block := range blocks {
		switch {
		case block.Type == "X509 CRL" && list == nil:
			l, err := x509.ParseRevocationList(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM block %d: %w", i+1, errNotCRL)
			}
			list = l
		case block.Type == "CERTIFICATE":
			c, err := certfile.ParseDER(block.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("PEM block %d: %w", i+1, err)
			}
			certs = append(certs, c)
		default:
			return nil, nil, fmt.Errorf("the CRL file holds a PEM block of another kind (%s); give one X509 CRL and its issuer's certificates", certfile.BlockName(block.Type))
		}
	}
	if list == nil {
		return nil, nil, fmt.Errorf("the file holds %d CERTIFICATE block(s) and no X509 CRL; give the CRL the court's CA published (certificates go to custodian trust add-root)", len(certs))
	}
	return list, certs, checkCRLExtensions(list)
}

// errNotCRL names a CRL that does not decode, without decoder text.
var errNotCRL = errors.New("not a valid CRL (damaged, or another kind of file); give the CRL file the court's CA published")

// crlExtensionsUnderstood are the critical extensions a full CRL may carry:
// authority key identifier and CRL number (RFC 5280 requires neither to be
// critical, but marking them so changes nothing here).
var crlExtensionsUnderstood = map[string]bool{"2.5.29.35": true, "2.5.29.20": true}

// checkCRLExtensions refuses CRLs that cover only part of the issuer's
// certificates. A partitioned CRL (issuing distribution point) or a delta
// CRL does not list every revoked certificate, so a serial missing from it
// would pass as not revoked: fail closed instead.
func checkCRLExtensions(list *x509.RevocationList) error {
	for _, e := range list.Extensions {
		switch {
		case e.Id.String() == "2.5.29.28":
			return errors.New("the CRL is partitioned (issuing distribution point); give the issuer's full CRL")
		case e.Id.String() == "2.5.29.27":
			return errors.New("the CRL is a delta CRL; give the issuer's full CRL")
		case e.Critical && !crlExtensionsUnderstood[e.Id.String()]:
			return fmt.Errorf("the CRL has critical extension %v, which is not understood", e.Id)
		}
	}
	return nil
}

// write stores data under the store's dir atomically and durably.
func (s *Store) write(name string, data []byte) error {
	if s.dir == "" {
		return nil
	}
	path := filepath.Join(s.dir, name)
	dir := filepath.Dir(path)
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return durable.WriteFile(path, data, 0o644)
}
