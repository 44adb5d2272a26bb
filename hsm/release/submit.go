package release

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/custodian-project/custodian/hsm/warrant"
)

// A warrant that names its envelopes by a list is submitted with the list,
// as multipart/form-data with two parts in this order: "warrant" (the
// signed warrant, DER CMS, at most MaxBody bytes) and "envelopes" (the
// list file, at most warrant.MaxListBytes). The list is parsed as it
// arrives, never held as bytes (docs/api.md).
const (
	PartWarrant   = "warrant"
	PartEnvelopes = "envelopes"
	// maxListSubmission caps the whole body: both parts and their framing.
	maxListSubmission = MaxBody + warrant.MaxListBytes + 64<<10
	// listDeadline bounds reading a submission with a list and answering
	// it (its seal proofs are checked before the answer): the server's
	// own timeouts are for warrants alone.
	listDeadline = 30 * time.Minute
)

func isMultipart(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "multipart/form-data"
}

// readWithList reads a submission with a list. Its refusals (a body that
// is not the two parts, a warrant too large or whose signatures do not
// match their certificates, a list that does not parse, busy) are
// counted, not logged: nothing accountable is known of the request yet.
// Whether the list is the one the warrant signs is checked once the
// warrant verifies (Daemon.SubmitList).
//
// A parsed list of 100,000 entries holds tens of MiB, and its sender sets
// the pace for up to listDeadline: the list is read only after the cheap
// checks (the officer's certificate, the warrant part read and its
// signatures matching their certificates, no warrant pending) and only
// inside the list cap (API.Lists), taken without waiting: a full cap
// refuses with busy. done gives the cap back once the list is no longer
// needed (after Daemon.SubmitList); it is never nil.
func (a *API) readWithList(w http.ResponseWriter, r *http.Request) (body []byte, list *warrant.EnvelopeList, done func(), err error) {
	done = func() {}
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(listDeadline)
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
	r.Body = http.MaxBytesReader(w, r.Body, maxListSubmission)
	badParts := func() error {
		return a.Daemon.count(CodeBadRequest, errors.New(`a submission with an envelope list is multipart/form-data with the parts "warrant" then "envelopes", and nothing else`))
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, nil, done, badParts()
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != PartWarrant {
		return nil, nil, done, badParts()
	}
	if body, err = a.readWarrantBody(part); err != nil {
		return nil, nil, done, err
	}
	if err := a.beforeList(body); err != nil {
		return nil, nil, done, err
	}
	select {
	case a.lists <- struct{}{}:
		done = func() { <-a.lists }
	default:
		return nil, nil, done, a.Daemon.count(CodeBusy, errors.New("this custodian is reading as many envelope lists as it takes at once; try again in a moment"))
	}
	if part, err = mr.NextPart(); err != nil || part.FormName() != PartEnvelopes {
		return nil, nil, done, badParts()
	}
	if list, err = warrant.ReadEnvelopeList(part); err != nil {
		return nil, nil, done, a.Daemon.count(codeOf(err), err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		return nil, nil, done, badParts()
	}
	return body, list, done, nil
}

// beforeList refuses, before a list is read, a warrant part whose
// signatures do not match the certificates it carries (no trust decision
// yet: that needs the trust store, Daemon.SubmitList), and any submission
// while a warrant awaits approval.
func (a *API) beforeList(p7s []byte) error {
	if _, _, err := warrant.Inspect(p7s); err != nil {
		return a.Daemon.count(codeOf(err), err)
	}
	if a.Daemon.busy() {
		return a.Daemon.count(CodeBusy, errBusy)
	}
	return nil
}
