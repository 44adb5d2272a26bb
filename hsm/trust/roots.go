package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
)

// Root is a pinned court root CA and the court it is pinned for.
type Root struct {
	Cert  *x509.Certificate
	Court string
}

// rootFileVersion is the version of roots/<sha256>.json. Roots pinned by
// earlier versions (roots/<sha256>.pem) carry no court and are refused.
const rootFileVersion = 1

// maxCourtName caps a court name: the warrant's own cap for a text field.
const maxCourtName = 4096

// rootFile is one pinned root on disk: roots/<sha256 of the DER>.json.
type rootFile struct {
	Version     int    `json:"version"`
	Court       string `json:"court"`
	Certificate []byte `json:"certificate"` // DER, base64 in JSON
}

// rootFileName is the on-disk name of a root file: the SHA-256 of its
// certificate, so a file cannot carry another root than its name says.
var rootFileName = regexp.MustCompile(`^[0-9a-f]{64}\.json$`)

// RootKeyID names a root by its key: the SHA-256 of its
// SubjectPublicKeyInfo, hex. A root certificate re-issued with the same
// key keeps its ID, and so its court and its warrants' replay namespace.
func RootKeyID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// CourtOf returns the court a pinned root is bound to, by the root's key,
// or "" if root is not pinned.
func (s *Store) CourtOf(root *x509.Certificate) string {
	if !slices.ContainsFunc(s.roots, func(r Root) bool { return r.Cert.Equal(root) }) {
		return ""
	}
	return s.courts[RootKeyID(root)]
}

// AddRoot pins a court root CA certificate (PEM or DER) for court. A root
// key is pinned for one court, and a court has one root key: pinning the
// same root again for the same court changes nothing; anything else that
// would bind a key or a court twice is refused, and so is a root that
// issued, or was issued by, a root already pinned (checkApart). court is compared byte for
// byte with the "court" of each warrant; package warrant checks it as
// display text (warrant.CheckCourtName), which the caller must do first.
func (s *Store) AddRoot(data []byte, court string) (*x509.Certificate, error) {
	if err := checkCourtName(court); err != nil {
		return nil, err
	}
	certs, err := certfile.Certificates(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("file holds %d certificates; add one root at a time", len(certs))
	}
	root := certs[0]
	if i := slices.IndexFunc(s.roots, func(r Root) bool { return r.Cert.Equal(root) }); i >= 0 && s.roots[i].Court == court {
		return root, nil
	}
	if err := s.checkApart(root); err != nil {
		return nil, err
	}
	if err := s.addRoot(Root{Cert: root, Court: court}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(root.Raw)
	f, err := json.MarshalIndent(rootFile{Version: rootFileVersion, Court: court, Certificate: root.Raw}, "", "  ")
	if err != nil {
		return nil, err
	}
	return root, s.write(filepath.Join("roots", hex.EncodeToString(sum[:])+".json"), append(f, '\n'))
}

// checkApart refuses a root whose key signed a pinned root of another key,
// or whose certificate a pinned root of another key signed: a national
// root over court CAs, a bridge, a cross-certificate. With both pinned, a
// judge under the lower one also chains, through it, to the upper one, so
// the courts' warrants are no longer apart. Package warrant refuses such
// a signer too (a store may hold roots pinned before this check); this
// says at pinning time what to do instead.
func (s *Store) checkApart(c *x509.Certificate) error {
	id := RootKeyID(c)
	for _, r := range s.roots {
		if RootKeyID(r.Cert) == id {
			continue // the same key: a re-issued root, checked by addRoot
		}
		if c.CheckSignatureFrom(r.Cert) == nil {
			return fmt.Errorf("%q was issued by %q, pinned for court %q: a judge under it would chain to both courts' roots; "+
				"pin only the top root, once, for one court, or keep the courts' PKIs separate (a root of its own for each court)", c.Subject, r.Cert.Subject, r.Court)
		}
		if r.Cert.CheckSignatureFrom(c) == nil {
			return fmt.Errorf("%q issued %q, pinned for court %q: a judge under that root would chain to both courts' roots; "+
				"pin only the top root, once, for one court, or keep the courts' PKIs separate (a root of its own for each court)", c.Subject, r.Cert.Subject, r.Court)
		}
	}
	return nil
}

func (s *Store) addRoot(r Root) error {
	c := r.Cert
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("%q is not a CA certificate; add the court's root CA", c.Subject)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%q may not sign certificates (no keyCertSign usage)", c.Subject)
	}
	if err := CheckNameConstraints(c); err != nil {
		return fmt.Errorf("%q cannot be pinned: %w", c.Subject, err)
	}
	id := RootKeyID(c)
	if bound, ok := s.courts[id]; ok && bound != r.Court {
		return fmt.Errorf("the key of root %q is already pinned for court %q; a root key belongs to one court", c.Subject, bound)
	}
	for k, court := range s.courts {
		if court == r.Court && k != id {
			return fmt.Errorf("court %q is already bound to another root key (%s); a court has one root key, so its warrant serials have one namespace", r.Court, k)
		}
	}
	s.roots = append(s.roots, r)
	s.courts[id] = r.Court
	s.pool.AddCert(c)
	return nil
}

// checkCourtName refuses names that cannot be a warrant's court field or
// would garble a listing: empty, too long, not UTF-8, control characters,
// surrounding white space. The display rules proper are the warrant's.
func checkCourtName(court string) error {
	switch {
	case court == "":
		return errors.New("a root is pinned for a court: give the court's name as its warrants write it (--court)")
	case len(court) > maxCourtName:
		return fmt.Errorf("court name is longer than %d bytes", maxCourtName)
	case !utf8.ValidString(court):
		return errors.New("court name is not valid UTF-8")
	case strings.TrimSpace(court) != court:
		return errors.New("court name has leading or trailing white space")
	case strings.ContainsFunc(court, unicode.IsControl):
		return errors.New("court name contains a control character")
	}
	return nil
}

// loadRoots reads roots/. Anything but version-1 root files (and a
// leftover temporary file of an interrupted write) is refused: a root
// pinned by an older version has no court.
func (s *Store) loadRoots() error {
	dir := filepath.Join(s.dir, "roots")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "."):
			continue // a temporary file of an interrupted write
		case strings.HasSuffix(name, ".pem"):
			return fmt.Errorf("the trust store %s was written by an older version: its roots are pinned without a court (%s); "+
				"move the store away and set it up again: custodian trust add-root FILE --court NAME for each root, then set-crl and set-policy", s.dir, name)
		case !e.Type().IsRegular() || !rootFileName.MatchString(name):
			return fmt.Errorf("trust store: unexpected %s in %s; remove it", name, dir)
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		r, err := parseRootFile(data, name)
		if err != nil {
			return fmt.Errorf("trust store root %s: %w; remove it and pin the root again", name, err)
		}
		if err := s.addRoot(r); err != nil {
			return fmt.Errorf("trust store root %s: %w", name, err)
		}
	}
	return nil
}

// maxRootFile caps a root file: a certificate of at most 32 KiB in base64
// and a court name.
const maxRootFile = 64 << 10

// parseRootFile reads a root file strictly. name is its file name, which
// must be the SHA-256 of the certificate.
func parseRootFile(data []byte, name string) (Root, error) {
	var f rootFile
	if err := strictjson.Decode(data, &f, maxRootFile); err != nil {
		return Root{}, err
	}
	if f.Version != rootFileVersion {
		return Root{}, fmt.Errorf("version %d is not %d", f.Version, rootFileVersion)
	}
	if err := checkCourtName(f.Court); err != nil {
		return Root{}, err
	}
	c, err := certfile.ParseDER(f.Certificate)
	if err != nil {
		return Root{}, err
	}
	if sum := sha256.Sum256(c.Raw); name != hex.EncodeToString(sum[:])+".json" {
		return Root{}, errors.New("the file name is not the certificate's SHA-256")
	}
	return Root{Cert: c, Court: f.Court}, nil
}
