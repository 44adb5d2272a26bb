package release

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
)

// record is a request's durable state, kept as a note in the ledger's
// database (ledger.Note, under requestKey). It is written in the
// transaction of each of the request's release entries, naming the entry,
// with the key IDs approved and what a restart needs (the warrant, the
// submitter): a kill leaves both or neither, so nothing was released
// without a record, and no record names an entry that is not there. Each
// package is written in one transaction with the record naming it, which
// says Done once every key ID has its package or its failure; a request
// that ends otherwise (a failure, a refusal of a later key ID) writes its
// record once more at the end. One durable write per state change. While
// the request is in flight its record is bound to the ledger's state
// (ledger.Note.Bound), and written unbound once Done: a restart acts only
// on a bound record (checked at Open as the entries are) whose first
// release entry commits to its warrant, so that a record planted, copied
// or edited offline makes nothing happen.
//
// Data directories written before records moved into the ledger keep them
// as releases/<id>/request.json, with the packages beside them (legacy):
// they are read, and finished at a restart, where they are; such a record
// may hold only an intent (its first entry not yet named), and the restart
// finds the entry from it (findFirstEntry).
type record struct {
	ID            string    `json:"id"`
	Warrant       []byte    `json:"warrant"` // the submitted signed warrant, for failure entries' commitments
	WarrantDigest string    `json:"warrant_digest"`
	KeyIDs        []string  `json:"key_ids"`
	Approved      time.Time `json:"approved"`
	// FirstEntry is the index of the request's first release entry, once
	// appended; FirstList the envelope list that entry commits to besides
	// the warrant, when its key ID is scoped. FirstEnvelope is the one
	// envelope the first entry committed to in records written when a
	// scoped release had one entry per envelope.
	FirstEntry    *int64              `json:"first_entry,omitempty"`
	FirstList     *warrant.ListDigest `json:"first_list,omitempty"`
	FirstEnvelope []byte              `json:"first_envelope,omitempty"`
	// Intent is where the first release entry would be, in legacy
	// records written right before it.
	Intent        *intent          `json:"intent,omitempty"`
	Done          bool             `json:"done"`
	LedgerIndices map[string]int64 `json:"ledger_indices,omitempty"`
	Failed        map[string]Code  `json:"failed,omitempty"`
	// Causes maps key IDs refused as changed_after_approval when checked
	// again before their entry to the code that refused them then.
	Causes   map[string]Code `json:"causes,omitempty"`
	Packages []string        `json:"packages,omitempty"`
	// Officer is the submitter's client certificate (Fingerprint): only
	// it is given the request's salts.
	Officer string `json:"officer,omitempty"`

	// legacy: the record was read from releases/<id>/request.json, and
	// is written back there.
	legacy bool
	// bound: the ledger binds the record (read from the notes, in flight):
	// it names every release entry and package of its request.
	bound bool
	// unlogged are the key IDs whose release entry is in the ledger
	// without their package or a failure entry after it: the ledger
	// refused the failure entry, or did not count the release entry and
	// blocked. Their failures stay in memory only (stored).
	unlogged []string
}

// stored is rec as it is written: while a key ID's release entry has
// neither its package nor its failure entry (unlogged), the record stays
// unfinished, with that key ID not failed, so that the next start logs it
// interrupted (recover): a record never says a request ended while an
// entry it made says "release ok" alone.
func (rec *record) stored() *record {
	if len(rec.unlogged) == 0 {
		return rec
	}
	out := *rec
	out.Done = false
	out.Failed, out.Causes = maps.Clone(rec.Failed), maps.Clone(rec.Causes)
	for _, k := range rec.unlogged {
		delete(out.Failed, k)
		delete(out.Causes, k)
	}
	return &out
}

// intent says where a request's first release entry will be: at or after
// index From (entries of other requests may come first), committing to
// the warrant, and to List when its key ID is scoped.
type intent struct {
	From int64               `json:"from"`
	List *warrant.ListDigest `json:"list,omitempty"`
}

func (rec *record) status() Status {
	s := Status{ID: rec.ID, State: StateReleased, WarrantDigest: rec.WarrantDigest, KeyIDs: rec.KeyIDs,
		Packages: rec.Packages, Failed: rec.Failed, LedgerIndices: rec.LedgerIndices}
	if len(rec.Failed) > 0 {
		s.State = StateFailed
		first := sortedKeys(rec.Failed)[0]
		s.Code, s.Cause = rec.Failed[first], rec.Causes[first]
		s.Message = "some key IDs were not released; see failed"
	}
	if !rec.Done {
		s.State = StateReleasing
	}
	return s
}

// Keys of the notes a request keeps in the ledger's database.
const (
	requestPrefix = "request/"
	packagePrefix = "package/"
	asidePrefix   = "unmatched/"
)

func requestKey(id string) []byte        { return []byte(requestPrefix + id) }
func packageKey(id, keyID string) []byte { return []byte(packagePrefix + id + "/" + keyID) }

// requestDir is a legacy request's directory.
func (d *Daemon) requestDir(id string) string {
	return filepath.Join(d.cfg.Appliance.Dir, Dir, id)
}

// packagePath is where a legacy request's package is.
func (d *Daemon) packagePath(id, keyID string) string {
	if ids.CheckKeyID(keyID) != nil {
		return filepath.Join(d.requestDir(id), "invalid")
	}
	return filepath.Join(d.requestDir(id), keyID+".release.json")
}

// recordNote is rec as the note that stores it: bound to the ledger's
// state while the request is in flight.
func recordNote(rec *record) (ledger.Note, error) {
	stored := rec.stored()
	data, err := json.Marshal(stored)
	return ledger.Note{Key: requestKey(rec.ID), Value: data, Bound: !stored.Done}, err
}

// writeRecord stores rec durably where it was read from.
func (d *Daemon) writeRecord(rec *record) error {
	if rec.legacy {
		return d.writeRecordFile(rec)
	}
	n, err := recordNote(rec)
	if err != nil {
		return err
	}
	return d.cfg.Appliance.Ledger.PutNotes(n)
}

// writeRecordFile stores a legacy record durably in its directory.
func (d *Daemon) writeRecordFile(rec *record) error {
	data, err := json.MarshalIndent(rec.stored(), "", "  ")
	if err != nil {
		return err
	}
	if err := durable.MkdirAll(d.requestDir(rec.ID), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(d.requestDir(rec.ID), "request.json"), data, 0o600)
}

// readRecord reads request id's record from the ledger's notes, or else
// from its legacy directory.
func (d *Daemon) readRecord(id string) (*record, error) {
	rec, err := d.readRecordIn(id, false)
	if errors.Is(err, ledger.ErrNoNote) {
		return d.readRecordIn(id, true)
	}
	return rec, err
}

func (d *Daemon) readRecordIn(id string, legacy bool) (*record, error) {
	var data []byte
	var err error
	switch l := d.cfg.Appliance.Ledger; {
	case legacy:
		// Planted files are refused, never waited on (a FIFO) or read
		// without end (a link to /dev/zero): recover reads them at start.
		data, err = durable.ReadRegular(filepath.Join(d.requestDir(id), "request.json"), maxRecord)
	case l == nil: // a daemon without a ledger in unit tests: legacy only
		err = ledger.ErrNoNote
	default:
		data, err = l.GetNote(requestKey(id), maxRecord)
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if err := strictjson.Decode(data, &rec, maxRecord); err != nil {
		return nil, err
	}
	if rec.ID != id {
		return nil, errors.New("request record names another request")
	}
	rec.legacy = legacy
	return &rec, nil
}

// settled reports whether every key ID of rec has its package or its
// failure.
func (rec *record) settled() bool {
	for _, k := range rec.KeyIDs {
		if _, failed := rec.Failed[k]; !failed && !slices.Contains(rec.Packages, k) {
			return false
		}
	}
	return true
}

// packageStored reports whether keyID's package of rec is stored.
func (d *Daemon) packageStored(rec *record, keyID string) (bool, error) {
	if rec.legacy {
		_, err := os.Stat(d.packagePath(rec.ID, keyID))
		return err == nil, nil
	}
	_, err := d.cfg.Appliance.Ledger.GetNote(packageKey(rec.ID, keyID), escrow.MaxReleaseSize)
	if errors.Is(err, ledger.ErrNoNote) {
		return false, nil
	}
	return err == nil, err
}

// releaseAll runs step 5 for every key ID of an approved request.
func (d *Daemon) releaseAll(r *request) {
	start := r.pressed
	cmds := d.cfg.TPM.Commands()
	v := r.v
	rec := &record{ID: r.status.ID, Warrant: r.p7s, WarrantDigest: r.status.WarrantDigest,
		KeyIDs: v.Warrant.KeyIDs, Approved: d.now(), LedgerIndices: map[string]int64{}, Failed: map[string]Code{}, Officer: r.officer}
	d.releaseFrom(r, rec, 0, []byte(v.Replay.String()), start, cmds)
}

// releaseFrom runs step 6 for the request's key IDs from position from
// on (replay: the replay key, until the first entry registers it), then
// ends the request — unless a key ID's witnesses time out after its
// entry: the request then awaits them (park).
func (d *Daemon) releaseFrom(r *request, rec *record, from int, replay []byte, start time.Time, cmds int64) {
	tm := r.status.Timings
	for pos := from; pos < len(rec.KeyIDs); pos++ {
		k := rec.KeyIDs[pos]
		if rec.FirstEntry != nil {
			t0 := time.Now()
			cause, err := d.recheckKeyID(r, k, *rec.FirstEntry)
			tm.RecheckMS += ms(time.Since(t0))
			if err != nil {
				d.refusedKeyID(r, rec, k, cause, err)
				continue
			}
		}
		index, code, err := d.releaseOne(r, rec, k, replay, tm)
		if index >= 0 {
			replay = nil // registered with the first entry
		}
		if errors.Is(err, errAwaitingWitnesses) {
			d.park(r, rec, pos, index, code, err)
			return
		}
		if err != nil {
			rec.Failed[k] = code
			d.cfg.Log.Error("release failed", "request", rec.ID, "key_id", k, "code", code, "err", err)
			if index < 0 && code == CodeReplayed {
				break
			}
			continue
		}
	}
	if !rec.Done {
		// The last package did not settle the request (a failure, a key
		// ID refused or not tried): its end is one more write.
		t0 := time.Now()
		rec.Done = true
		if err := d.writeRecord(rec); err != nil {
			d.cfg.Log.Error("request record not updated", "request", rec.ID, "err", err)
		}
		tm.StoreMS += ms(time.Since(t0))
	}
	tm.TotalMS = ms(time.Since(start))
	tm.TPMCommands = d.cfg.TPM.Commands() - cmds
	st := rec.status()
	fmt.Fprintf(d.cfg.Display, "request %s: %s\n", rec.ID[:8], st.State)
	d.finish(r, func(s *Status) {
		s.State, s.Packages, s.Failed, s.LedgerIndices, s.Code, s.Cause, s.Message = st.State, st.Packages, st.Failed, st.LedgerIndices, st.Code, st.Cause, st.Message
	})
}

// refusedKeyID logs a later key ID of a request refused when checked
// again before its entry (changed_after_approval, with the cause): the key
// IDs released before it stay released and logged.
func (d *Daemon) refusedKeyID(r *request, rec *record, keyID string, cause Code, err error) {
	index, lerr := d.logRefusal(r.p7s, CodeChangedAfterApproval, keyID)
	if lerr != nil {
		d.cfg.Log.Error("refusal not logged", "request", rec.ID, "key_id", keyID, "err", lerr)
	}
	rec.Failed[keyID] = CodeChangedAfterApproval
	if rec.Causes == nil {
		rec.Causes = map[string]Code{}
	}
	rec.Causes[keyID] = cause
	d.cfg.Log.Info("refused", "request", rec.ID, "key_id", keyID, "code", CodeChangedAfterApproval, "cause", cause, "err", err, "ledger_index", index)
}

// releaseOne releases one key ID. It returns the (first) release entry's
// index (-1 if none was appended) and, on failure, the code. Any failure
// after the entry is logged as a failure entry.
func (d *Daemon) releaseOne(r *request, rec *record, keyID string, replay []byte, tm *Timings) (int64, Code, error) {
	b := r.bundles[keyID] // checked at the press, or again right before this key ID
	if b == nil {
		return -1, CodeNoShare, fmt.Errorf("no share of key ID %s was checked before its release", keyID)
	}
	// One release entry per key ID, committing to what it releases: the
	// warrant, and in scoped mode the envelope list (its tree hash and
	// count) whose partials follow. One NV increment, however many
	// envelopes.
	subject := r.p7s
	var named []warrant.EnvelopeRef
	var list *warrant.ListDigest
	if b.Escrow.Mode == escrow.ModeScoped {
		if r.list != nil {
			named = r.list.For(keyID)
		}
		if len(named) == 0 {
			// checkBundles refused this at the press; a later key ID's
			// bundle is read again (recheckKeyID) and may have changed.
			return -1, CodeNoEnvelopes, fmt.Errorf("key ID %s is scoped and the warrant names none of its envelopes", keyID)
		}
		digest := r.list.Digest()
		list = &digest
		subject = listSubject(r.p7s, digest)
	}
	t0 := time.Now()
	index, code, err := d.appendRelease(rec, keyID, subject, replay, list)
	tm.LedgerMS += ms(time.Since(t0))
	if err != nil {
		return index, code, err // index >= 0: the entry stands, nothing is unsealed
	}
	rec.LedgerIndices[keyID] = index
	d.cfg.Hook("entry", keyID)
	code, err = d.afterEntry(r, rec, b, index, tm)
	return index, code, err
}

// errAwaitingWitnesses: the witnesses did not cosign a checkpoint holding
// a key ID's release entry in time; nothing was unsealed, and the request
// awaits them (park, Resume).
var errAwaitingWitnesses = errors.New("the release awaits its witnesses")

// afterEntry runs what follows a key ID's durable release entry: the
// witness wait, the unseal or partials, the package. A failure is logged
// as a failure entry, except a witness timeout (errAwaitingWitnesses),
// after which nothing was unsealed and the entry may still be served.
func (d *Daemon) afterEntry(r *request, rec *record, b *escrow.Bundle, index int64, tm *Timings) (Code, error) {
	keyID := b.Escrow.KeyID
	fail := func(code Code, err error) (Code, error) {
		d.logFailure(r.p7s, rec, keyID, code)
		return code, err
	}
	cosigned, code, err := d.witnessed(b, index, tm)
	if code == CodeWitnessTimeout {
		return code, fmt.Errorf("%w: %w", errAwaitingWitnesses, err)
	}
	if err != nil {
		return fail(code, err)
	}
	// Right before the unseal (the witness wait may have been long):
	// blocked since the entry (another append the TPM did not count),
	// neither a package nor a failure entry could be stored, so nothing
	// is unsealed; the key ID stays unlogged and the next start logs it
	// interrupted.
	// Blocked waits for ledger.db's commit of the entry (unless reading
	// the witnesses' checkpoint already did): the ledger's time.
	t0 := time.Now()
	blocked := d.cfg.Appliance.Ledger.Blocked()
	tm.LedgerMS += ms(time.Since(t0))
	if blocked != nil {
		rec.unlogged = append(rec.unlogged, keyID)
		return CodeLedgerFailed, fmt.Errorf("the ledger blocked after key ID %s's release entry; nothing was unsealed: %w", keyID, blocked)
	}
	var named []warrant.EnvelopeRef
	if b.Escrow.Mode == escrow.ModeScoped && r.list != nil {
		named = r.list.For(keyID)
	}
	var pkg *escrow.Release
	if b.Escrow.Mode == escrow.ModeScoped {
		pkg, code, err = d.sealPartials(r, b, named, tm)
	} else {
		pkg, code, err = d.sealShare(r, b, tm)
	}
	if err != nil {
		return fail(code, err)
	}
	if err := d.storePackage(rec, pkg, index, cosigned, tm); err != nil {
		return fail(CodeStoreFailed, err)
	}
	d.cfg.Hook("stored", keyID)
	return "", nil
}

// logFailure logs a failure entry for keyID of rec after its release
// entry. One the ledger refuses leaves keyID unlogged, for the next start
// to log (record.stored); one stored but not counted stands.
func (d *Daemon) logFailure(p7s []byte, rec *record, keyID string, code Code) {
	_, err := d.appendEntry(ledger.KindFailure, ledger.OutcomeRefused, code, keyID, p7s, nil)
	if err != nil && !errors.Is(err, ledger.ErrUncounted) {
		rec.unlogged = append(rec.unlogged, keyID)
		d.cfg.Log.Error("failure entry not logged; the next start logs it", "request", rec.ID, "key_id", keyID, "code", code, "err", err)
	}
}

// listSubject is what a scoped key ID's release entry commits to: the
// warrant, then the envelope list's tree hash and count (opening.Subject).
// The warrant signs the list already (inline, or by the same tree hash and
// count); the entry names it so that a court holding the salt shows that
// one envelope was released under the entry with the warrant and the
// envelope's inclusion proof in the list, without the rest of the list
// (docs/ledger.md).
func listSubject(p7s []byte, d warrant.ListDigest) []byte { return opening.Subject(p7s, &d) }

// partialSubject is what a partial's release entry committed to when a
// scoped release had one entry per envelope: records of that time are
// still matched (matchRecord).
func partialSubject(p7s, enc []byte) []byte {
	return append(append(append([]byte{}, p7s...), "\x00envelope\x00"...), enc...)
}

// appendRelease appends a release entry for keyID of rec's request, with
// rec naming it in the entry's own transaction: a kill leaves both or
// neither, so the record knows every key ID that has an entry. The first
// entry of a request carries the replay key, and rec then names it as the
// first (with the list it commits to). An entry stored but not counted
// returns its index with ledger_failed: it is named in rec, and keyID is
// unlogged.
func (d *Daemon) appendRelease(rec *record, keyID string, subject, replay []byte, list *warrant.ListDigest) (int64, Code, error) {
	notes := func(index int64) ([]ledger.Note, error) {
		next := *rec
		if next.FirstEntry == nil {
			next.FirstEntry, next.FirstList = &index, list
		}
		next.LedgerIndices = maps.Clone(rec.LedgerIndices)
		if next.LedgerIndices == nil {
			next.LedgerIndices = map[string]int64{}
		}
		next.LedgerIndices[keyID] = index
		n, err := recordNote(&next)
		return []ledger.Note{n}, err
	}
	index, err := d.appendEntryNoted(ledger.KindRelease, ledger.OutcomeOK, "", keyID, subject, replay, notes)
	switch {
	case errors.Is(err, ledger.ErrReplay):
		return -1, CodeReplayed, err
	case errors.Is(err, ledger.ErrUncounted):
		// The entry (and the note naming it) stands, and the ledger
		// blocked: no failure entry can follow it now, so the key ID
		// stays unlogged and the record unfinished under the entry.
		rec.unlogged = append(rec.unlogged, keyID)
	case err != nil:
		return -1, CodeLedgerFailed, err
	}
	if rec.FirstEntry == nil {
		rec.FirstEntry, rec.FirstList = &index, list
	}
	if err != nil {
		rec.LedgerIndices[keyID] = index
		return index, CodeLedgerFailed, err
	}
	return index, "", nil
}

// sealShare unseals the share in the TPM and seals it to the recipient.
func (d *Daemon) sealShare(r *request, b *escrow.Bundle, tm *Timings) (*escrow.Release, Code, error) {
	blob, err := tpm.ParseBlob(b.Blob)
	if err != nil {
		return nil, CodeUnsealFailed, err
	}
	t0 := time.Now()
	share, err := tpm.Unseal(d.cfg.TPM, blob)
	tm.TPMMS += ms(time.Since(t0))
	if err != nil {
		return nil, tpmCode(err, CodeUnsealFailed), err
	}
	t0 = time.Now()
	defer func() { tm.HPKEMS += ms(time.Since(t0)) }()
	pkg, err := escrow.SealShare(r.v.Warrant.RecipientKey(), r.v.Digest[:], d.cfg.Appliance.ID, b.Escrow.KeyID, b.Index, share)
	clear(share)
	if err != nil {
		return nil, CodeSealFailed, err
	}
	return pkg, "", nil
}

// sealPartials has the TPM compute the partial of each envelope the
// warrant names for the key ID and prove them all at once, and seals the
// batch to the recipient.
func (d *Daemon) sealPartials(r *request, b *escrow.Bundle, named []warrant.EnvelopeRef, tm *Timings) (*escrow.Release, Code, error) {
	key, err := tpm.ParseScopedKey(b.Blob)
	if err != nil {
		return nil, CodePartialFailed, err
	}
	points := make([][]byte, len(named))
	for i, e := range named {
		points[i] = e.Enc
	}
	c, _ := b.Escrow.Custodian(b.CustodianID)
	t0 := time.Now()
	progress := d.progress(r, b.Escrow.KeyID, len(points))
	batch, err := computePartials(d.cfg.TPM, key, c.ProofKey, points, b.ScopedApproval(), progress)
	tm.TPMMS += ms(time.Since(t0))
	if err != nil {
		return nil, tpmCode(err, CodePartialFailed), err
	}
	sealed, err := escrow.NewPartialsBatch(points, batch)
	if err != nil {
		return nil, CodePartialFailed, err
	}
	t0 = time.Now()
	defer func() { tm.HPKEMS += ms(time.Since(t0)) }()
	pkg, err := escrow.SealPartials(r.v.Warrant.RecipientKey(), r.v.Digest[:], d.cfg.Appliance.ID, b.Escrow.KeyID, b.Index, sealed)
	if err != nil {
		return nil, CodeSealFailed, err
	}
	return pkg, "", nil
}

// witnessedCheckpoint is a checkpoint the witness quorum cosigned.
type witnessedCheckpoint struct {
	note []byte
	size int64
}

// witnessed waits, after a release entry is durable and before anything
// is unsealed, for the key ID's witness quorum (its escrow file's) to
// cosign a checkpoint holding the entry, at most WitnessTimeout. The
// quorum answered right before the entry (witnessesAnswer), so only a
// witness failing in between makes it time out: the request then awaits
// them (park) and the officer tries again (docs/officer.md). With a
// quorum of 0 it asks nothing and returns nil: the package then carries
// a fresh checkpoint, as without witnesses.
func (d *Daemon) witnessed(b *escrow.Bundle, index int64, tm *Timings) (*witnessedCheckpoint, Code, error) {
	p := b.Escrow.WitnessPolicy()
	if p.Quorum == 0 {
		return nil, "", nil
	}
	t0 := time.Now()
	defer func() { tm.WitnessMS += ms(time.Since(t0)) }()
	l := d.cfg.Appliance.Ledger
	signed, size, err := l.CheckpointSize()
	if err != nil {
		return nil, CodeInternal, fmt.Errorf("checkpoint for the witnesses: %w", err)
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.WitnessTimeout)
	defer cancel()
	note, size, err := d.cosigner.Cosign(ctx, l, signed, size, p) // size grows when a witness was ahead
	if err != nil {
		switch code, advice := witnessCode(err, CodeWitnessTimeout); code {
		case CodeWitnessRefused:
			return nil, code, fmt.Errorf("entry %d of key ID %s: %w; nothing was released: %s", index, b.Escrow.KeyID, err, advice)
		case CodeWitnessTimeout:
			return nil, code, fmt.Errorf("entry %d of key ID %s: %w (waited %s)", index, b.Escrow.KeyID, err, d.cfg.WitnessTimeout)
		default:
			return nil, code, err
		}
	}
	return &witnessedCheckpoint{note: note, size: size}, "", nil
}

// storePackage adds the entry's inclusion proof and a checkpoint — the
// one the witnesses cosigned, or a fresh signed one without witnesses —
// to the package and writes it durably, with rec naming it, in one
// transaction: rec says Done when this package settles the request.
// A package is stored once: one is never written over another.
func (d *Daemon) storePackage(rec *record, pkg *escrow.Release, index int64, cosigned *witnessedCheckpoint, tm *Timings) error {
	t0 := time.Now()
	inc, err := d.prove(index, cosigned)
	if err != nil {
		return fmt.Errorf("inclusion proof: %w", err)
	}
	pkg.Ledger = inc
	tm.ProofMS += ms(time.Since(t0))
	data, err := pkg.Marshal()
	if err != nil {
		return err
	}
	t0 = time.Now()
	defer func() { tm.StoreMS += ms(time.Since(t0)) }()
	if stored, err := d.packageStored(rec, pkg.KeyID); err != nil {
		return err
	} else if stored {
		return fmt.Errorf("a package of key ID %s is already stored for request %s; not writing another", pkg.KeyID, rec.ID)
	}
	next := *rec
	next.Packages = append(slices.Clone(rec.Packages), pkg.KeyID)
	next.Done = next.settled()
	n, err := recordNote(&next)
	if err != nil {
		return err
	}
	if err := d.cfg.Appliance.Ledger.PutNotes(ledger.Note{Key: packageKey(rec.ID, pkg.KeyID), Value: data}, n); err != nil {
		return err
	}
	rec.Packages, rec.Done = next.Packages, next.Done
	return nil
}

// prove returns entry index with its inclusion proof in the cosigned
// checkpoint, or in a fresh one when there is none.
func (d *Daemon) prove(index int64, cosigned *witnessedCheckpoint) (*ledger.Inclusion, error) {
	l := d.cfg.Appliance.Ledger
	if cosigned == nil {
		return l.Prove(index)
	}
	entry, err := l.Entry(index)
	if err != nil {
		return nil, err
	}
	p, err := l.InclusionProof(index, cosigned.size)
	if err != nil {
		return nil, err
	}
	return &ledger.Inclusion{Index: index, Entry: string(entry), Proof: p, Checkpoint: string(cosigned.note)}, nil
}

// recover finishes requests a previous run left between their first entry
// and their last package: key IDs with a stored package are served; every
// other approved key ID is logged once (recoverOne) — its share is never
// sealed a second time. It acts only on a record the appliance left in
// flight (inFlight: bound by the ledger, or one an older version left,
// at the first start of this one) that matches the checked ledger
// (matchRecord); any other is logged and set aside, and never stops the
// daemon. Records in the ledger's notes come first, then legacy ones
// under Dir; then, at the first start, the note recordsBoundKey is
// written. While the ledger is blocked nothing can be checked or logged:
// records wait.
func (d *Daemon) recover() error {
	entries, err := os.ReadDir(filepath.Join(d.cfg.Appliance.Dir, Dir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	l := d.cfg.Appliance.Ledger
	if err := l.Blocked(); err != nil {
		d.cfg.Log.Warn("interrupted requests are not checked while the ledger is blocked", "err", err)
		return nil
	}
	recordsBound, err := l.NoteBound(recordsBoundKey)
	if err != nil {
		return err
	}
	keys, err := l.NoteKeys([]byte(requestPrefix))
	if err != nil {
		return err
	}
	for _, k := range keys {
		d.recoverID(strings.TrimPrefix(string(k), requestPrefix), false, recordsBound)
	}
	for _, e := range entries {
		if ValidID(e.Name()) {
			d.recoverID(e.Name(), true, recordsBound)
		}
	}
	if recordsBound {
		return nil
	}
	return l.PutNotes(ledger.Note{Key: recordsBoundKey, Value: []byte("request records in flight are bound from here on"), Bound: true})
}

// recordsBoundKey is the note, bound for the ledger's life, that says this
// version has run on it: every record it leaves in flight is bound. Until
// it is there (the first start after an update), unfinished records an
// older version left — unbound notes, or files of the old layout — are
// finished under that version's checks; from then on, only bound records
// are.
var recordsBoundKey = []byte("records/bound")

// recoverID finishes request id's record, from the notes or the legacy
// directory, unless it is done. recordsBound says that every record left
// in flight since this ledger last started is bound (recordsBoundKey).
func (d *Daemon) recoverID(id string, legacy, recordsBound bool) {
	var rec *record
	err := errors.New("not a request ID")
	if ValidID(id) {
		rec, err = d.readRecordIn(id, legacy)
	}
	if err == nil && rec.Done {
		return
	}
	if err == nil {
		err = d.inFlight(rec, recordsBound)
	}
	if err == nil {
		err = d.matchRecord(rec)
	}
	if err != nil {
		d.setAside(id, legacy, err)
		return
	}
	if err := d.recoverOne(rec); err != nil {
		d.cfg.Log.Error("interrupted request not finished", "request", rec.ID, "err", err)
	}
}

// errUnmatched wraps why a record is not one this appliance wrote.
var errUnmatched = errors.New("the request record does not match the ledger")

// inFlight accepts an unfinished record only if the appliance left it in
// flight: bound by the ledger (written so by this version, and found as
// written at Open: rec.bound), or, at the first start of this version
// (!recordsBound), a record an older version left unbound or in the old file
// layout, under that version's checks. A record planted, copied under
// another ID, or marked unfinished again offline is never bound.
func (d *Daemon) inFlight(rec *record, recordsBound bool) error {
	if !rec.legacy {
		bound, err := d.cfg.Appliance.Ledger.NoteBound(requestKey(rec.ID))
		if err != nil {
			return err
		}
		rec.bound = bound
	}
	if !rec.bound && recordsBound {
		return fmt.Errorf("%w: it is unfinished but not bound to the ledger's state (planted, copied or edited offline)", errUnmatched)
	}
	return nil
}

// matchRecord accepts an unfinished record only if the appliance wrote it:
// its first release entry is in the ledger (checked at Open) and commits,
// under the salt kept for it, to the record's warrant, whose key IDs are
// the record's.
func (d *Daemon) matchRecord(rec *record) error {
	l := d.cfg.Appliance.Ledger
	if rec.FirstEntry == nil && rec.Intent != nil {
		if err := d.findFirstEntry(rec); err != nil {
			return err
		}
	}
	if rec.FirstEntry == nil {
		return fmt.Errorf("%w: it names no release entry", errUnmatched)
	}
	i := *rec.FirstEntry
	if i < 0 || i >= l.Size() {
		return fmt.Errorf("%w: its first entry %d is not in the ledger", errUnmatched, i)
	}
	e, salt, err := entryAt(l, i)
	if err != nil {
		return err
	}
	subject := rec.Warrant
	switch {
	case rec.FirstList != nil:
		subject = listSubject(rec.Warrant, *rec.FirstList)
	case rec.FirstEnvelope != nil:
		subject = partialSubject(rec.Warrant, rec.FirstEnvelope)
	}
	if e.Kind != ledger.KindRelease || !bytes.Equal(e.Commitment, ledger.Commit(salt, subject)) {
		return fmt.Errorf("%w: entry %d is not a release of its warrant", errUnmatched, i)
	}
	w, _, err := warrant.Inspect(rec.Warrant)
	if err != nil || !slices.Equal(w.KeyIDs, rec.KeyIDs) {
		return fmt.Errorf("%w: its key IDs are not its warrant's", errUnmatched)
	}
	return nil
}

// findFirstEntry names in rec the release entry its intent announced: the
// first release entry from the intent's index on that commits to rec's
// warrant (and list). The process was killed after the entry and before
// the record named it; without one, the kill came before the entry and
// nothing was released.
func (d *Daemon) findFirstEntry(rec *record) error {
	l := d.cfg.Appliance.Ledger
	subject := rec.Warrant
	if rec.Intent.List != nil {
		subject = listSubject(rec.Warrant, *rec.Intent.List)
	}
	for i := max(rec.Intent.From, 0); i < l.Size(); i++ {
		e, salt, err := entryAt(l, i)
		if err != nil {
			return err
		}
		if e.Kind == ledger.KindRelease && bytes.Equal(e.Commitment, ledger.Commit(salt, subject)) {
			rec.FirstEntry, rec.FirstList = &i, rec.Intent.List
			return nil
		}
	}
	return fmt.Errorf("%w: no release entry of its warrant follows entry %d (stopped before its first entry: nothing was released)", errUnmatched, rec.Intent.From)
}

func entryAt(l *ledger.Ledger, i int64) (*ledger.Entry, []byte, error) {
	data, err := l.Entry(i)
	if err != nil {
		return nil, nil, err
	}
	salt, err := l.Salt(i)
	if err != nil {
		return nil, nil, err
	}
	e, err := ledger.ParseEntry(data)
	return e, salt, err
}

// setAside moves a request record recovery will not act on out of the
// way, so it is reported once: a note to the key unmatched/<id>, a legacy
// directory to <id>.unmatched (its name no longer a request ID).
func (d *Daemon) setAside(id string, legacy bool, cause error) {
	if !legacy {
		err := d.cfg.Appliance.Ledger.MoveNote(requestKey(id), []byte(asidePrefix+id))
		d.cfg.Log.Error("ignored a request record that does not match the ledger", "request", id, "cause", cause, "moved_to", asidePrefix+id, "move_err", err)
		return
	}
	aside := d.requestDir(id) + ".unmatched"
	err := os.Rename(d.requestDir(id), aside)
	if err == nil {
		err = durable.SyncDir(filepath.Dir(aside))
	}
	d.cfg.Log.Error("ignored a request record that does not match the ledger", "request", id, "cause", cause, "moved_to", aside, "move_err", err)
}

// recoverOne ends an interrupted request: each key ID without its package
// or failure gets one entry, once. A bound record names every release
// entry and package of its request (each was written with it): a key ID
// whose entry it names was released and not delivered, a failure entry
// (interrupted) follows that entry; one without an entry was approved and
// never released, a refusal (interrupted), so that no failure entry stands
// without its release entry. A record an older version left names only
// its first entry: its packages are looked for, and each key ID without
// one gets a failure entry, as that version did.
func (d *Daemon) recoverOne(rec *record) error {
	if rec.Failed == nil {
		rec.Failed = map[string]Code{}
	}
	if !rec.bound {
		rec.Packages = nil
	}
	for _, k := range rec.KeyIDs {
		stored := slices.Contains(rec.Packages, k)
		if !rec.bound {
			var err error
			if stored, err = d.packageStored(rec, k); err != nil {
				return err
			}
			if stored {
				rec.Packages = append(rec.Packages, k)
			}
		}
		if stored {
			continue
		}
		if _, ok := rec.Failed[k]; ok {
			continue
		}
		kind := ledger.KindFailure
		if _, entered := rec.LedgerIndices[k]; !entered && rec.bound {
			kind = ledger.KindRefusal
		}
		logged, err := d.interruptionLogged(rec, k, kind)
		if err != nil {
			return err
		}
		if !logged {
			if _, err := d.appendEntry(kind, ledger.OutcomeRefused, CodeInterrupted, k, rec.Warrant, nil); err != nil {
				return fmt.Errorf("logging the interrupted request %s, key ID %s: %w", rec.ID, k, err)
			}
		}
		rec.Failed[k] = CodeInterrupted
	}
	rec.Done = true
	d.cfg.Log.Warn("finished an interrupted release", "request", rec.ID, "packages", rec.Packages, "failed", rec.Failed)
	return d.writeRecord(rec)
}

// interruptionLogged reports whether an entry of kind for keyID of rec's
// warrant follows its first entry: a start killed after that entry and
// before the record said so does not log it twice.
func (d *Daemon) interruptionLogged(rec *record, keyID string, kind ledger.Kind) (bool, error) {
	l := d.cfg.Appliance.Ledger
	for i := *rec.FirstEntry + 1; i < l.Size(); i++ {
		e, salt, err := entryAt(l, i)
		if err != nil {
			return false, err
		}
		if e.Kind == kind && e.KeyID == keyID && bytes.Equal(e.Commitment, ledger.Commit(salt, rec.Warrant)) {
			return true, nil
		}
	}
	return false, nil
}

// tpmCode is the code of a TPM refusal to open a share or key: the PCRs
// or the version floor, or otherwise the step's failure code.
func tpmCode(err error, otherwise Code) Code {
	switch {
	case errors.Is(err, tpm.ErrPCRMismatch):
		return CodePCRMismatch
	case errors.Is(err, tpm.ErrDowngrade), errors.Is(err, tpm.ErrNoFloor):
		return CodeDowngrade
	}
	return otherwise
}

// belowFloor refuses, before the summary, a share whose image the TPM's
// version floor no longer admits: the TPM would refuse it after the entry.
func belowFloor(state tpmState, b *escrow.Bundle) error {
	floor, err := state.floor()
	if err != nil {
		return err
	}
	if floor > b.Escrow.SecurityVersion {
		return &tpm.DowngradeError{Version: b.Escrow.SecurityVersion, Floor: floor}
	}
	return nil
}
