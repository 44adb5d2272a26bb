package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
)

func newReleaseCommand(g *globals) *cobra.Command {
	var server, warrantPath, listPath, out, saltsOut, requestID, resume string
	var network clientTLS
	cmd := &cobra.Command{
		Use:   "release --server URL --warrant w.p7s [--envelope-list w.envelopes] --out release.json [--request REQUEST-ID | --resume REQUEST-ID]",
		Short: "Submit a warrant to a custodian and save its release package after the officer presses the button",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p7s, err := os.ReadFile(warrantPath)
			if err != nil {
				return err
			}
			if saltsOut == "" {
				saltsOut = strings.TrimSuffix(out, filepath.Ext(out)) + ".salts.json"
			}
			asked := saltsOut
			if requestID != "" || resume != "" {
				// The first run of this request may have kept its salts
				// there: never replace them, keep these beside them.
				saltsOut = besideSalts(saltsOut)
			}
			c, err := g.apiClient(server, network)
			if err != nil {
				return err
			}
			if err := durable.CheckReplaceable(out); err != nil { // before the warrant: a bad --out is said first
				return err
			}
			w, _, err := warrant.Inspect(p7s)
			if err != nil {
				return withHint(err, "--warrant must be a signed warrant (custodian warrant sign)")
			}
			if err := checkReleasePaths(w.KeyIDs, out, saltsOut); err != nil {
				return err
			}
			for flag, id := range map[string]string{"request": requestID, "resume": resume} {
				if id != "" && !release.ValidID(id) {
					return withHint(fmt.Errorf("--%s %q is not a request ID", flag, id),
						"a request ID is the 32 hexadecimal digits custodian release printed after \"request\"")
				}
			}
			var salts []opening.Salt
			err = g.release(cmd.Context(), c, submission{p7s: p7s, listPath: listPath, request: requestID, resume: resume}, out, &salts)
			if saltsOut != asked && len(salts) > 0 {
				g.printf("%s exists (an earlier run kept salts there; it is left as it is): these salts go beside it, in %s\n", asked, saltsOut)
			}
			return g.keepSalts(server, p7s, saltsOut, salts, err)
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "the custodian's API, e.g. https://custodian-a.court.example:8443")
	cmd.Flags().StringVar(&warrantPath, "warrant", "", "the signed warrant (DER CMS)")
	cmd.Flags().StringVar(&listPath, "envelope-list", "", "the envelope list the warrant names (written by custodian warrant new beside it)")
	cmd.Flags().StringVar(&out, "out", "", "where to save the package; with several key IDs, one file per key ID (NAME.KEY-ID.json)")
	cmd.Flags().StringVar(&requestID, "request", "", "fetch a request submitted before again, by the ID release printed, instead of submitting: its result, packages and salts (the salts only for the client certificate that submitted it)")
	cmd.Flags().StringVar(&resume, "resume", "", "instead of submitting, ask the custodian to try again the request of this ID, which awaits its witnesses after its ledger entry (awaiting_witnesses); give the same warrant")
	cmd.Flags().StringVar(&saltsOut, "salts-out", "", "where to keep the salts of the request's ledger entries, the court's secret for custodian ledger reveal (default: --out with .salts.json for its extension; with --request or --resume, a file already there is left as it is and the salts go beside it, in NAME.2.json, NAME.3.json...)")
	cmd.MarkFlagsMutuallyExclusive("request", "resume")
	network.register(cmd, true)
	for _, f := range []string{"server", "warrant", "out"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

type apiClient struct {
	base *url.URL
	http *http.Client
	ca   string // the --ca file, "" for the system's roots
	peer peer   // how messages name the server
	pace *pacer // nil: requests are not spaced
	// retryFor caps the time one request waits on 429 and 503 answers
	// (0: maxRetrying); retrying, if set, is told of each wait.
	retryFor time.Duration
	retrying func(status int, wait time.Duration)
}

// apiError is a refusal the custodian sent.
type apiError struct {
	code    release.Code
	message string
	index   *int64
	salt    string // opens the refusal's entry, for an officer's client
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("the custodian refused: %s: %s", serverText(string(e.code)), serverText(e.message))
	if e.index != nil {
		s += fmt.Sprintf(" (logged as ledger entry %d)", *e.index)
	}
	return s
}

func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	var r io.Reader
	contentType := ""
	if body != nil {
		r, contentType = bytes.NewReader(body), "application/pkcs7-mime"
	}
	return c.send(ctx, method, path, contentType, r, out)
}

// send makes a request with body r (nil: none) of contentType. A response
// read into a *[]byte is a release package, read up to its own cap.
func (c *apiClient) send(ctx context.Context, method, path, contentType string, r io.Reader, out any) error {
	limit := int64(release.MaxResponse)
	if _, raw := out.(*[]byte); raw {
		limit = escrow.MaxReleaseSize
	}
	return c.sendCapped(ctx, method, path, contentType, r, limit, out)
}

// getCapped reads path's body of at most limit bytes into out; a longer
// one is an error (errTooLarge), never cut short.
func (c *apiClient) getCapped(ctx context.Context, path string, limit int64, out *[]byte) error {
	return c.sendCapped(ctx, http.MethodGet, path, "", nil, limit, out)
}

// errTooLarge is an answer longer than what was asked can be.
var errTooLarge = errors.New("the answer is larger than it can be")

const (
	// maxRetryAfter caps one wait a server asks for with Retry-After.
	maxRetryAfter = time.Minute
	// maxRetrying caps the time one request spends waiting its turn, so
	// that a server that always answers "busy" is named, not waited on
	// for ever.
	maxRetrying = 10 * time.Minute
)

// sendCapped is send with the body capped at limit. A request without a
// body that the server answers 429 or 503 with Retry-After is made again
// after that wait, for up to maxRetrying: the
// ledger routes bound how much one client reads at once (docs/api.md), and
// a mirror or monitor that reads a whole log must wait its turn, not fail.
// A client with a pacer spaces its requests below the appliance's limit.
func (c *apiClient) sendCapped(ctx context.Context, method, path, contentType string, r io.Reader, limit int64, out any) error {
	path, query, _ := strings.Cut(path, "?")
	u := c.base.JoinPath(path)
	u.RawQuery = query
	deadline := time.Now().Add(cmp.Or(c.retryFor, maxRetrying))
	for {
		if err := c.pace.wait(ctx); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
		if err != nil {
			return err
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return c.transportHint(err)
		}
		if wait, again := retryAfter(resp); again && r == nil && time.Now().Add(wait).Before(deadline) {
			resp.Body.Close()
			if c.retrying != nil {
				c.retrying(resp.StatusCode, wait)
			}
			if err := sleepCtx(ctx, wait); err != nil {
				return err
			}
			continue
		}
		return c.readAnswer(req, resp, limit, out)
	}
}

// readAnswer reads resp, at most limit bytes, into out: a refusal as an
// *apiError, a *[]byte as it is, anything else as the API's JSON.
func (c *apiClient) readAnswer(req *http.Request, resp *http.Response, limit int64, out any) error {
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return withHint(fmt.Errorf("reading %s's answer to %s %s: %w", c.peer.name, req.Method, req.URL.RequestURI(), err), "check the network and try again")
	}
	if resp.StatusCode >= 300 {
		var eb release.ErrorBody
		if release.DecodeResponse(data, &eb) != nil || eb.Error.Code == "" {
			return &httpStatus{code: resp.StatusCode, err: fmt.Errorf("%s answered %s", c.peer.name, serverText(resp.Status))}
		}
		return &httpStatus{code: resp.StatusCode,
			err: &apiError{code: eb.Error.Code, message: eb.Error.Message, index: eb.Error.LedgerIndex, salt: eb.Error.Salt}}
	}
	if int64(len(data)) > limit {
		return withHint(fmt.Errorf("%w (over %d bytes): %s", errTooLarge, limit, req.URL.Path),
			"check that "+c.peer.flag+" names "+c.peer.what+": none answers this much")
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if err := release.DecodeResponse(data, out); err != nil {
		// The decoder's own text says nothing to the user: name the
		// request instead.
		return withHint(fmt.Errorf("%s's answer to %s %s is not the API's JSON (cut short, another format, or fields this version does not know)", c.peer.name, req.Method, req.URL.RequestURI()),
			"check that "+c.peer.flag+" names "+c.peer.what+" of this version (docs/api.md)")
	}
	return nil
}

// retryAfter reports whether resp asks to try again (429 or 503 with a
// Retry-After in seconds), and after how long.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 0 {
		return 0, false
	}
	return min(time.Duration(secs)*time.Second, maxRetryAfter), true
}

// httpStatus is an answer other than 2xx: the refusal, and the status it
// came with (a tile withheld with 404 is not a network failure).
type httpStatus struct {
	code int
	err  error
}

func (e *httpStatus) Error() string { return e.err.Error() }
func (e *httpStatus) Unwrap() error { return e.err }

// maxServerText caps what of a server's own words a message repeats.
const maxServerText = 200

// awaiting is the error for a request awaiting its witnesses (or another
// cause fixed while it waits): this client's own words for the code, so
// that the officer reads what to wait for and --resume whole, whatever
// the server's message holds or the cut of serverText leaves.
func awaiting(st release.Status) error {
	why := release.ParkedFix(st.Code)
	if why == "" {
		why = serverText(st.Message)
	}
	return withHint(fmt.Errorf("request %s is not released yet: %s", st.ID, why),
		fmt.Sprintf("its release entry stands and nothing was unsealed; then run this command again with --resume %s. Do not have the custodian restarted meanwhile: a restart ends the request, and the court must issue a new warrant", st.ID))
}

// serverText is text a server chose (a refusal's message, a status line)
// made safe to print: as it is when it is short printable text, else
// quoted, so that it can neither end the line nor move the terminal's
// cursor, and cut to maxServerText bytes.
func serverText(s string) string {
	if len(s) > maxServerText {
		s = s[:maxServerText] + "…"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// submission is a signed warrant and the path of the envelope list it
// names ("" for none).
type submission struct {
	p7s      []byte
	listPath string
	request  string // a request submitted before, fetched again ("": submit)
	resume   string // a request awaiting its witnesses, tried again instead of a submission
}

// post sends the submission: the warrant alone, or with its list as
// multipart/form-data, the list streamed from its file.
func (c *apiClient) post(ctx context.Context, s submission, st *release.Status) error {
	if s.listPath == "" {
		return c.do(ctx, http.MethodPost, "/v1/warrants", s.p7s, st)
	}
	f, err := os.Open(s.listPath)
	if err != nil {
		return err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := writeParts(mw, s.p7s, f)
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	err = c.send(ctx, http.MethodPost, "/v1/warrants", mw.FormDataContentType(), pr, st)
	pr.Close()
	return err
}

func writeParts(mw *multipart.Writer, p7s []byte, list io.Reader) error {
	w, err := mw.CreateFormField(release.PartWarrant)
	if err == nil {
		_, err = w.Write(p7s)
	}
	if err == nil {
		w, err = mw.CreateFormField(release.PartEnvelopes)
	}
	if err == nil {
		_, err = io.Copy(w, list)
	}
	return err
}

// submit posts the warrant, and again while the custodian answers that it
// is rate limited (it is then under a flood of submissions, and counts,
// never logs, each one refused) for up to a minute.
func (c *apiClient) submit(ctx context.Context, s submission, st *release.Status) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.post(ctx, s, st)
		var e *apiError
		if !errors.As(err, &e) || e.code != release.CodeRateLimited || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// requestFor reads the status of request id into st and checks that it
// is for the warrant p7s.
func (c *apiClient) requestFor(ctx context.Context, id string, p7s []byte, st *release.Status) error {
	if err := c.do(ctx, http.MethodGet, "/v1/requests/"+url.PathEscape(id), nil, st); err != nil {
		return releaseHint(err)
	}
	if d := warrant.Digest(contentOf(p7s)); st.WarrantDigest != hex.EncodeToString(d[:]) {
		return withHint(fmt.Errorf("request %s is not for the warrant --warrant gives", id),
			"give the warrant that was submitted in that request")
	}
	return nil
}

// release submits, waits for the press and saves the packages. The salts
// the custodian gives with the result (an officer's client only) go into
// salts, also when it refuses.
func (g *globals) release(ctx context.Context, c *apiClient, s submission, out string, salts *[]opening.Salt) error {
	p7s := s.p7s
	w, _, err := warrant.Inspect(p7s)
	if err != nil {
		return withHint(err, "--warrant must be a signed warrant (custodian warrant sign)")
	}
	if w.EnvelopeList != nil && s.listPath == "" {
		return withHint(errors.New("the warrant names its envelopes by a list, and no list was given"), "add --envelope-list with the list file custodian warrant new wrote beside the warrant")
	}
	var st release.Status
	if s.request != "" {
		if err := c.requestFor(ctx, s.request, p7s, &st); err != nil {
			return err
		}
		g.printf("request %s: %s\n", st.ID, st.State)
	} else if s.resume != "" {
		// The warrant is checked before the custodian is asked to release.
		if err := c.requestFor(ctx, s.resume, p7s, &st); err != nil {
			return err
		}
		if err := c.do(ctx, http.MethodPost, "/v1/requests/"+url.PathEscape(s.resume)+"/resume", nil, &st); err != nil {
			return releaseHint(err)
		}
		g.printf("trying request %s again: waiting for the witnesses\n", st.ID)
	} else if err := c.submit(ctx, s, &st); err != nil {
		var e *apiError
		if errors.As(err, &e) && e.index != nil && e.salt != "" {
			*salts = []opening.Salt{{Index: *e.index, Salt: e.salt}}
		}
		return releaseHint(err)
	} else {
		g.printf("%s\n\nwarrant digest %s\npress the button on the custodian (request %s)\n", st.Summary, st.WarrantDigest, st.ID)
	}
	defer func() { *salts = st.Salts }()
	var shown release.Progress
	for st.State == release.StateAwaitingPress || st.State == release.StateReleasing {
		left := time.Until(st.Deadline).Round(time.Second)
		if st.State == release.StateAwaitingPress && left > 0 {
			g.printf("waiting for the button: %s left\n", left)
		}
		if p := st.Progress; p != nil && *p != shown {
			g.printf("%s\n", p)
			shown = *p
		}
		if err := c.do(ctx, http.MethodGet, "/v1/requests/"+st.ID+"?wait=5", nil, &st); err != nil {
			return releaseHint(err)
		}
	}
	if p := st.Progress; p != nil && *p != shown {
		g.printf("%s\n", p)
	}
	if st.State == release.StateRefused {
		return releaseHint(&apiError{code: st.Code, message: st.Message, index: indexOf(st.LedgerIndices, "")})
	}
	digest := warrant.Digest(contentOf(p7s))
	saved := 0
	for _, k := range st.Packages {
		var data []byte
		if err := c.do(ctx, http.MethodGet, "/v1/requests/"+st.ID+"/packages/"+url.PathEscape(k), nil, &data); err != nil {
			return err
		}
		r, err := escrow.ParseRelease(data)
		if err != nil {
			return fmt.Errorf("the package for key ID %s is malformed: %w", k, err)
		}
		if r.KeyID != k || !bytes.Equal(r.WarrantDigest, digest[:]) || r.Recipient != w.Recipient {
			return fmt.Errorf("the package for key ID %s is not for this warrant", k)
		}
		path := packagePath(out, k, len(w.KeyIDs))
		if err := durable.WriteFile(path, data, 0o644); err != nil {
			return err
		}
		g.printf("released key ID %s by custodian %s (ledger entry %d): saved %s\n", k, r.CustodianID, st.LedgerIndices[k], path)
		saved++
	}
	if st.State == release.StateAwaitingWitnesses {
		return awaiting(st)
	}
	if len(st.Failed) > 0 {
		return withHint(fmt.Errorf("%d of %d key IDs failed after the approval: %s", len(st.Failed), len(st.KeyIDs), failedKeyIDs(st.Failed)),
			"the failures are logged in the custodian's ledger; ask the court for a new warrant for those key IDs")
	}
	if saved == 0 {
		return errors.New("the custodian released nothing")
	}
	return nil
}

// contentOf returns the signed JSON of a warrant that Inspect accepted.
func contentOf(p7s []byte) []byte {
	c, _ := warrant.Content(p7s)
	return c
}

func indexOf(m map[string]int64, k string) *int64 {
	if i, ok := m[k]; ok {
		return &i
	}
	return nil
}

func releaseHint(err error) error {
	var e *apiError
	if !errors.As(err, &e) {
		return err
	}
	hints := map[release.Code]string{
		release.CodeBusy:                           "another warrant awaits approval on this custodian; wait for it and try again",
		release.CodeReplayed:                       "a warrant is used once; ask the court for a new warrant (new serial)",
		release.CodeNoPress:                        "nobody pressed the button in time; submit again with the officer at the device",
		release.CodeButtonHeld:                     "the button was held or is stuck; release it, then submit again and press once",
		release.CodeLedgerBlocked:                  "the appliance detected a rollback or clone; its operator must resolve it (custodian ledger resolve-rollback)",
		release.CodeStateMismatch:                  "the appliance's data directory is not the state its TPM recorded (restored or edited); its operator must resolve it (docs/operator.md)",
		release.CodeStateInterrupt:                 "a trust store or bundle change on the appliance was interrupted; its operator must check and accept it (custodian ledger resolve-rollback)",
		release.CodeForeignLedgerKey:               "the appliance's data directory holds a checkpoint key its TPM did not anchor (forged or from another device); its operator must restore the device's own data directory",
		release.CodeClockBehind:                    "the appliance's clock is behind its ledger; its operator must set the clock",
		release.CodePCRMismatch:                    "the appliance did not boot the approved image; its operator must restore it",
		release.CodeImageNotApproved:               "the appliance did not boot the approved image; its operator must restore it",
		release.CodeDowngrade:                      "the appliance booted an image older than its security version floor; its operator must boot the current approved image",
		release.CodeRateLimited:                    "wait a moment and try again",
		release.CodeShuttingDown:                   "the appliance stopped before the press; nothing was released: submit the warrant again when it is back",
		release.CodeTPMFull:                        "nothing was released and the warrant is not spent; the appliance's operator restarts it, then submit the warrant again",
		release.CodeWitnessUnreachable:             "the witnesses the escrow file names did not answer; nothing was released and the warrant is not spent: submit the same warrant again once they can be reached (ask the appliance's operator)",
		release.CodeWitnessTimeout:                 "a witness stopped answering right after the release entry; nothing was released: once the witnesses answer, run this command again with --resume and the request ID",
		release.CodeWitnessRefused:                 "the witnesses refused the appliance's ledger (another history, or a restored copy); nothing was released: call the appliance's operator",
		release.CodeChangedAfterApproval:           "the warrant stopped verifying while the device waited for the press (see the cause); nothing was released",
		release.CodeBeforeFloor:                    "ask the court to sign the warrant again",
		release.CodeNoEnvelopes:                    "a scoped key ID releases only named envelopes; the court lists them (custodian warrant new --envelope)",
		release.CodeNotScoped:                      "a share-mode key ID releases its whole share; the court drops the envelopes or that key ID",
		release.CodeUnprovenEnvelope:               "an envelope the warrant names does not prove its sealer drew its key (a version 1 envelope, or one made from another envelope's key); the court names envelopes sealed by the current custodian escrow seal, taken from the messaging provider, through custodian warrant new --envelope",
		release.CodeClientCertRequired:             "this custodian takes warrants only from court officers: give --client-cert and --client-key (your officer certificate from the court)",
		release.CodeClientCertUntrusted:            "your --client-cert is not from the court officers' CA this custodian trusts, or it expired; ask the court for a current officer certificate",
		release.Code(warrant.ReasonRevoked):        "a signer's certificate is revoked; the court must sign with a valid certificate",
		release.Code(warrant.ReasonCRLStale):       "the appliance's CRL is out of date; its trust admin must install a fresh one (custodian trust set-crl)",
		release.Code(warrant.ReasonCRLMissing):     "the appliance has no CRL for the signer's CA; its trust admin must install one",
		release.Code(warrant.ReasonNotAddressed):   "the warrant does not name this custodian; submit it to a custodian it names",
		release.Code(warrant.ReasonUnknownKeyID):   "this custodian holds no share of a key ID the warrant names",
		release.Code(warrant.ReasonExpired):        "the warrant has expired; ask the court for a new one",
		release.Code(warrant.ReasonNotYetValid):    "the warrant is not in force yet",
		release.Code(warrant.ReasonUntrustedChain): "the signer does not chain to a court root this custodian trusts",
		release.Code(warrant.ReasonBadText):        "a field holds a character the display cannot show as it is; the court must write it in plain text and sign again",
		release.Code(warrant.ReasonListMismatch):   "the list is not the one the warrant signs: send the list file custodian warrant new wrote with this warrant",
		release.Code(warrant.ReasonListMissing):    "the warrant names an envelope list: add --envelope-list with its file",
		release.Code(warrant.ReasonListUnexpected): "the warrant names no envelope list: leave out --envelope-list",
		release.Code(warrant.ReasonListTruncated):  "the list file is cut off: copy it again from the court",
		release.Code(warrant.ReasonListMalformed):  "the list file is not one custodian warrant new wrote (or was edited): copy it again from the court",
		release.Code(warrant.ReasonListDuplicate):  "the list names an envelope twice: the court writes the list again with custodian warrant new",
		release.Code(warrant.ReasonListTooLarge):   "a list holds at most 100,000 envelopes: the court splits the warrant",
		release.Code(warrant.ReasonListKeyID):      "the list names an envelope of a key ID the warrant does not name: the court writes the warrant and list again",
		release.Code(warrant.ReasonListTarget):     "the list names an envelope of a target the warrant does not name: the court writes the warrant and list again",
	}
	if h, ok := hints[e.code]; ok {
		return withHint(err, h)
	}
	if h, ok := signerHints[warrant.Reason(e.code)]; ok {
		return withHint(err, h)
	}
	return err
}

// failedKeyIDs lists failed key IDs with their codes, in key ID order:
// "2026-11 (partial_failed), 2026-12 (changed_after_approval)".
func failedKeyIDs(failed map[string]release.Code) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(failed)) {
		parts = append(parts, fmt.Sprintf("%s (%s)", k, failed[k]))
	}
	return strings.Join(parts, ", ")
}

// packagePath is where the package of key ID k of a warrant naming n
// key IDs is saved: out, or with several, NAME.KEY-ID.json.
func packagePath(out, k string, n int) string {
	if n > 1 {
		return strings.TrimSuffix(out, filepath.Ext(out)) + "." + k + ".json"
	}
	return out
}

// checkReleasePaths refuses, before anything is submitted, a salts file
// that would replace a package (--salts-out equal to --out, or the
// default NAME.salts.json of a warrant naming a key ID "salts") or an
// earlier salts file: a salt given with a refusal cannot be asked for
// again, and a package replaced by the court's salts would be handed to
// the agency. Package paths must be replaceable files.
func checkReleasePaths(keyIDs []string, out, saltsOut string) error {
	salts := filepath.Clean(saltsOut)
	for _, k := range keyIDs {
		path := packagePath(out, k, len(keyIDs))
		if filepath.Clean(path) == salts {
			return withHint(fmt.Errorf("--salts-out %s is also where the package of key ID %s goes", saltsOut, k),
				"give --salts-out a file of its own: the salts are the court's secret, the package goes to the agency")
		}
		if err := durable.CheckReplaceable(path); err != nil {
			return err
		}
	}
	return mustNotExist("salts-out", saltsOut)
}

// keepSalts writes the salts the custodian gave, the court's secret for
// opening its entries later (custodian ledger reveal), readable by this
// user only, whatever the release's outcome (err, returned as it is). A
// salt is worth keeping even for a refusal: it shows which warrant the
// refusal entry was about.
func (g *globals) keepSalts(server string, p7s []byte, path string, salts []opening.Salt, err error) error {
	if len(salts) == 0 {
		return err
	}
	d := warrant.Digest(contentOf(p7s))
	f := &opening.SaltsFile{Version: opening.Version, Server: server, WarrantDigest: hex.EncodeToString(d[:]), Salts: salts}
	data, merr := f.Marshal()
	if merr == nil {
		merr = writeNew("salts-out", path, data, 0o600)
	}
	if merr != nil {
		// A refusal's salt cannot be asked for again: show it, so that
		// the court can keep it by hand.
		if data != nil {
			g.printf("the salts file was not written; keep this as a .salts.json file, secret:\n%s", data)
		}
		return errors.Join(err, fmt.Errorf("the salts of ledger entries %s were not kept in %s: %w", saltIndexes(salts), path, merr))
	}
	g.printf("kept the salts of ledger entries %s in %s: keep it secret; custodian ledger reveal opens an entry with it\n", saltIndexes(salts), path)
	return err
}

// besideSalts is path if nothing is there, else the first of
// NAME.2.json, NAME.3.json... beside it that is free: a request fetched
// again or resumed keeps its salts without touching an earlier file.
func besideSalts(path string) string {
	ext := filepath.Ext(path)
	base := strings.TrimSuffix(path, ext)
	for n := 2; mustNotExist("salts-out", path) != nil; n++ {
		path = base + "." + strconv.Itoa(n) + ext
	}
	return path
}

func saltIndexes(salts []opening.Salt) string {
	s := make([]string, len(salts))
	for i, x := range salts {
		s[i] = strconv.FormatInt(x.Index, 10)
	}
	return strings.Join(s, ", ")
}
