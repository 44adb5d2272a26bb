package escrow

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
)

// ErrNotNamed means a release holds no partial for the envelope: the
// warrant it answers did not name that envelope.
var ErrNotNamed = errors.New("the release holds no partial for this envelope (the warrant did not name it)")

// OpenScoped opens one envelope of a scoped key ID from the custodians'
// release packages: it opens each package with the agency's identity,
// takes the partial for this envelope, checks its proof against the
// custodian's proof key, and combines t valid partials. It refuses
// packages of another key ID, mode or custodian set as Recover does, and
// names every custodian whose partial was missing or failed its proof
// (*BadShareError, returned beside the plaintext when enough remained).
// To open many envelopes, make one [ScopedOpener] and keep it.
func OpenScoped(id *recipient.Identity, pub *Public, releases []*Release, envelope []byte) (*Envelope, []byte, error) {
	o, err := NewScopedOpener(id, pub, releases)
	if err != nil {
		return nil, nil, err
	}
	return o.Open(envelope)
}

// ScopedOpener opens envelopes of one scoped key ID from one set of
// release packages. Each package is opened and its partials indexed once;
// the Lagrange coefficients are computed once per set of custodians that
// combine. Open is safe for concurrent use.
type ScopedOpener struct {
	pub      *Public
	releases []*releasePartials // in the order given

	mu       sync.Mutex
	lagrange map[string]*lagrange // by the indices that combine
}

// releasePartials is one custodian's partials, by the envelope's R; or,
// when its package gave none, why.
type releasePartials struct {
	custodian *Custodian
	// proven holds the partials of a version 2 package, whose batch
	// proof verified; perEnvelope those of a version 1 package, each
	// still to be checked against its own proof.
	proven      map[string][]byte
	perEnvelope map[string]*tpm.Partial
	err         error
}

// NewScopedOpener opens the release packages with the agency's identity
// and checks each version 2 package's batch proof, once, the packages in
// parallel. It refuses packages of another key ID, mode or custodian set,
// and two packages of one custodian; a package that does not open, or
// whose batch fails its proof, counts as a missing partial of that
// custodian for every envelope (see [ScopedOpener.PackageErrors]).
func NewScopedOpener(id *recipient.Identity, pub *Public, releases []*Release) (*ScopedOpener, error) {
	if pub.Mode != ModeScoped {
		return nil, fmt.Errorf("key ID %s is in %s mode: recover its key with Recover", pub.KeyID, pub.Mode)
	}
	o := &ScopedOpener{pub: pub, lagrange: map[string]*lagrange{}}
	seen := map[int]bool{}
	for _, r := range releases {
		c, err := checkRelease(pub, r, seen)
		if err != nil {
			return nil, err
		}
		o.releases = append(o.releases, &releasePartials{custodian: c})
	}
	var wg sync.WaitGroup
	for i, rp := range o.releases {
		wg.Go(func() { rp.open(id, pub, releases[i]) })
	}
	wg.Wait()
	return o, nil
}

// open opens a scoped package, checks a batch's proof, and indexes the
// partials by the envelope's encapsulated key. A package naming one
// envelope twice keeps the first partial, as a package read in order
// would.
func (rp *releasePartials) open(id *recipient.Identity, pub *Public, r *Release) {
	c := rp.custodian
	if r.Version == releaseVersionPerEnvelope {
		rp.perEnvelope, rp.err = openPerEnvelope(id, pub, c, r)
		return
	}
	data, err := id.Open(BatchInfo(r.WarrantDigest, c.ID, pub.KeyID, c.Index), r.SealedPartials)
	if err != nil {
		rp.err = errors.New("the package does not open with this identity")
		return
	}
	var batch PartialsBatch
	if err := strictjson.Decode(data, &batch, MaxReleaseSize); err != nil {
		rp.err = fmt.Errorf("the package's partials do not decode: %v", err)
		return
	}
	if rp.err = verifyBatch(c, &batch); rp.err != nil {
		return
	}
	rp.proven = make(map[string][]byte, len(batch.Partials))
	for _, p := range batch.Partials {
		if _, dup := rp.proven[string(p.Enc)]; !dup {
			rp.proven[string(p.Enc)] = p.Partial
		}
	}
}

// verifyBatch checks a custodian's batch of partials against its proof
// key. It is the one place the agency checks a version 2 package's work:
// a failure rejects every partial of the package, since the proof does
// not say which is wrong.
func verifyBatch(c *Custodian, batch *PartialsBatch) error {
	points, b := batch.Split()
	if err := tpm.VerifyBatch(c.ProofKey, points, b); err != nil {
		return fmt.Errorf("%w: none of the package's %d partials is used; open with the other custodians' packages", tpm.ErrBadBatch, len(points))
	}
	return nil
}

// openPerEnvelope opens a version 1 scoped package, whose partials each
// carry a proof.
func openPerEnvelope(id *recipient.Identity, pub *Public, c *Custodian, r *Release) (map[string]*tpm.Partial, error) {
	data, err := id.Open(PartialsInfo(r.WarrantDigest, c.ID, pub.KeyID, c.Index), r.SealedPartials)
	if err != nil {
		return nil, errors.New("the package does not open with this identity")
	}
	var partials []EnvelopePartial
	if err := strictjson.Decode(data, &partials, MaxReleaseSize); err != nil {
		return nil, fmt.Errorf("the package's partials do not decode: %v", err)
	}
	byEnc := make(map[string]*tpm.Partial, len(partials))
	for i := range partials {
		if _, dup := byEnc[string(partials[i].Enc)]; !dup {
			byEnc[string(partials[i].Enc)] = &partials[i].Partial
		}
	}
	return byEnc, nil
}

// verifiedPartial returns the custodian's partial s_i·R for the envelope
// whose encapsulated key is enc: from a batch that verified as a whole,
// or (version 1) checked against its own proof.
func (rp *releasePartials) verifiedPartial(enc []byte) ([]byte, error) {
	if rp.err != nil {
		return nil, rp.err
	}
	if rp.perEnvelope == nil {
		p, ok := rp.proven[string(enc)]
		if !ok {
			return nil, ErrNotNamed
		}
		return p, nil
	}
	p, ok := rp.perEnvelope[string(enc)]
	if !ok {
		return nil, ErrNotNamed
	}
	return tpm.VerifyPartial(rp.custodian.ProofKey, enc, p)
}

// PackageErrors names the custodians whose packages gave no partial at
// all (they did not open or decode), or returns nil. Open names them for
// every envelope too.
func (o *ScopedOpener) PackageErrors() *BadShareError {
	bad := &BadShareError{Custodians: map[string]string{}}
	for _, rp := range o.releases {
		if rp.err != nil {
			bad.Custodians[rp.custodian.ID] = rp.err.Error()
		}
	}
	if len(bad.Custodians) == 0 {
		return nil
	}
	return bad
}

// Open opens one envelope: its seal proof is checked (ParseEnvelope),
// every custodian's partial for it is checked against its proof, and the
// first t valid ones, in the order the packages were given, are combined.
// Custodians whose partial was missing or failed are named
// (*BadShareError), beside the plaintext when enough remained, and joined
// to ErrNotEnoughShares when not.
func (o *ScopedOpener) Open(envelope []byte) (*Envelope, []byte, error) {
	env, err := ParseEnvelope(envelope)
	if err != nil {
		return nil, nil, err
	}
	return o.OpenProven(env)
}

// OpenProven is Open on an envelope whose seal proof was checked
// (ParseEnvelope, or with others in OpenBatch); it refuses any other.
func (o *ScopedOpener) OpenProven(env *Envelope) (*Envelope, []byte, error) {
	if !env.proven {
		return nil, nil, &unprovenError{detail: "its seal proof was not checked"}
	}
	bad := &BadShareError{Custodians: map[string]string{}}
	var good []PartialShare
	for _, rp := range o.releases {
		p, err := rp.verifiedPartial(env.Enc)
		if err != nil {
			bad.Custodians[rp.custodian.ID] = err.Error()
			continue
		}
		good = append(good, PartialShare{Index: rp.custodian.Index, Point: p})
	}
	if len(good) < o.pub.Threshold {
		var err error = &notEnoughPartials{valid: len(good), needed: o.pub.Threshold}
		if len(bad.Custodians) > 0 {
			err = errors.Join(err, bad)
		}
		return nil, nil, err
	}
	env, pt, err := o.combineAndOpen(env, good[:o.pub.Threshold])
	if err != nil {
		return nil, nil, err
	}
	if len(bad.Custodians) > 0 {
		return env, pt, bad
	}
	return env, pt, nil
}

// combineAndOpen combines verified partials with the coefficients of
// their set and decrypts.
func (o *ScopedOpener) combineAndOpen(env *Envelope, good []PartialShare) (*Envelope, []byte, error) {
	xs, points, err := parsePartials(good)
	if err != nil {
		return nil, nil, err
	}
	dh, err := combineWith(points, o.coefficients(xs))
	if err != nil {
		return nil, nil, err
	}
	return openWithDH(o.pub, env, dh)
}

// coefficients returns the combination of the indices xs, in their
// order, computed the first time a set combines: with the same t
// custodians, that is once.
func (o *ScopedOpener) coefficients(xs []int) *lagrange {
	var key strings.Builder
	for _, x := range xs {
		key.WriteByte(byte(x)) // 1..MaxCustodians: one byte each
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if l, ok := o.lagrange[key.String()]; ok {
		return l
	}
	l := newLagrange(xs)
	o.lagrange[key.String()] = l
	return l
}
