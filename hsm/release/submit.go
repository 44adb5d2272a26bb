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
// is not the two parts, a warrant too large, a list that does not parse)
// are counted, not logged: nothing accountable is known of the request
// yet. Whether the list is the one the warrant signs is checked once the
// warrant verifies (Daemon.SubmitList).
func (a *API) readWithList(w http.ResponseWriter, r *http.Request) ([]byte, *warrant.EnvelopeList, error) {
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
		return nil, nil, badParts()
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != PartWarrant {
		return nil, nil, badParts()
	}
	body, err := a.readWarrantBody(part)
	if err != nil {
		return nil, nil, err
	}
	if part, err = mr.NextPart(); err != nil || part.FormName() != PartEnvelopes {
		return nil, nil, badParts()
	}
	list, err := warrant.ReadEnvelopeList(part)
	if err != nil {
		return nil, nil, a.Daemon.count(codeOf(err), err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		return nil, nil, badParts()
	}
	return body, list, nil
}
